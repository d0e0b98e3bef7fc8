"""simulator -> Kafka (PLAINTEXT or the Event Hubs-style SASL_SSL listener) -> spark-submit job -> InfluxDB,
checked against ground truth computed from the simulator's manifest; and a SIGKILL + restart in the middle."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamdash.stack import install

from . import bundle, ground_truth
from .conftest import REPO

WINDOWS = {"5s": 5, "20s": 20}
WATERMARK_S = 10
SIMULATION = ["--devices", "8", "--sites", "3", "--rate", "100", "--duration", "40", "--seed", "7",
              "--late-beyond-rate", "0.02", "--malformed-rate", "0.02", "--duplicate-rate", "0.02",
              "--watermark-s", str(WATERMARK_S), "--max-window-s", "20"]


class Job:
    """`spark-submit jobs/stream_to_influx.py` in its own process group."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, java_options: str = ""):
        jars = ",".join(str(jar) for jar in install.spark_kafka_connector_jars())
        spark_submit = Path(sys.executable).parent / "spark-submit"
        argv = [str(spark_submit), "--master", "local[2]", "--driver-memory", "2g", "--conf", "spark.ui.enabled=false",
                *(["--driver-java-options", java_options] if java_options else []),
                "--jars", jars, str(REPO / "jobs" / "stream_to_influx.py"), *args]
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **env, "PYSPARK_PYTHON": sys.executable})

    def wait_started(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"job exited early:\n{self.log.read_text()[-3000:]}"
            if "streamdash.job: started" in self.log.read_text(errors="replace"):
                return
            time.sleep(1)
        raise AssertionError("job did not start")

    def driver_pid(self) -> int:
        """The Python driver, a child of spark-submit's JVM."""
        for child in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (child / "cmdline").read_bytes()
                stat = (child / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if b"stream_to_influx.py" in cmdline and ppid == self.proc.pid:
                return int(child.name)
        raise AssertionError("no driver process")

    def terminate(self) -> int:
        os.kill(self.driver_pid(), signal.SIGTERM)
        return self.proc.wait(timeout=120)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.kill()


def simulate(target: list[str], topic: str, manifest: Path, env: dict[str, str],
             extra: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streamdash.cli", "simulate", *target, "--topic", topic,
                             *SIMULATION, *extra, "--manifest", str(manifest)], env={**os.environ, **env})


def job_args(stack, topic: str, database: str, work: Path) -> list[str]:
    """`--env local` against the stack's plaintext Kafka listener."""
    overrides = [f"source.bootstrap_servers={stack.info['kafka']['bootstrap_servers']}", f"source.topic={topic}",
                 "source.starting_offsets=earliest", f"influxdb.url={stack.info['influxdb']['url']}",
                 f"influxdb.bucket={database}/autogen", f"dead_letter.path={work / 'dead_letters'}",
                 f"job.checkpoint_location={work / 'checkpoints'}", "job.trigger_interval=1 second",
                 f"job.name=e2e_{database}",
                 f"aggregation.window_sizes={json.dumps([f'{s} seconds' for s in WINDOWS.values()])}",
                 f"aggregation.watermark={WATERMARK_S} seconds"]
    return ["--env", "local", *(arg for override in overrides for arg in ("--set", override))]


def bundle_job_args(stack, topic: str, database: str, work: Path) -> tuple[list[str], dict[str, str]]:
    """Parity with Databricks: the dev target's streaming task parameters, read from databricks.yml with its
    variables set as `databricks bundle deploy --var` would set them for this stack, and the environment its job
    cluster fills from the secret scope. Azure's DNS is the one stand-in: the namespace's endpoint is
    swapped for the stack's Event Hubs-style SASL_SSL listener."""
    variables = {"eventhubs_namespace": "streamdash-local", "eventhub_name": topic, "starting_offsets": "earliest",
                 "influxdb_url": stack.info["influxdb"]["url"], "influxdb_bucket": f"{database}/autogen",
                 "window_sizes": json.dumps([f"{s} seconds" for s in WINDOWS.values()]),
                 "watermark": f"{WATERMARK_S} seconds", "trigger_interval": "1 second",
                 "checkpoint_location": str(work / "checkpoints"), "dead_letter_location": str(work / "dead_letters"),
                 "dead_letter_format": "json", "notification_email": "oncall@example.com"}
    resolved = bundle.resolve("dev", variables)
    task = resolved.task("streamdash_stream", "stream_to_influx")
    endpoint = "streamdash-local.servicebus.windows.net:9093"
    args = [arg.replace(endpoint, stack.info["kafka"]["eventhubs_bootstrap_servers"])
            for arg in task["spark_python_task"]["parameters"]]
    cluster = next(c["new_cluster"] for c in resolved.job("streamdash_stream")["job_clusters"]
                   if c["job_cluster_key"] == task["job_cluster_key"])
    local_secrets = {"eventhubs-connection-string": stack.secrets["eventhubs_connection_string"],
                     "influxdb-token": stack.secrets["influxdb_token"]}
    env = {name: local_secrets[value.removesuffix("}}").rsplit("/", 1)[1]]
           for name, value in cluster["spark_env_vars"].items()}
    return args, env


def java_trust_store(ca_file: str, work: Path) -> str:
    """The JVM trusts the stack's CA as Databricks trusts Azure's: through the default trust store."""
    store = work / "truststore.p12"
    subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "streamdash-ca", "-file", ca_file,
                    "-keystore", str(store), "-storetype", "PKCS12", "-storepass", "changeit"],
                   check=True, capture_output=True)
    return f"-Djavax.net.ssl.trustStore={store} -Djavax.net.ssl.trustStorePassword=changeit"


def influx_points(influx, database: str) -> dict[tuple, dict]:
    points = {}
    for measurement in ("telemetry_device", "telemetry_site"):
        for row in influx.query(f"SELECT * FROM {measurement}", database):
            key = (measurement, row.pop("window"), row.pop("site"), row.pop("device", None), row.pop("time"))
            row.pop("device_type", None)
            points[key] = {k: v for k, v in row.items() if v is not None}
    return points


def dead_letters(folder: Path) -> dict[tuple[int, int], str]:
    found = {}
    for part in folder.glob("batch_id=*/part-*.json"):
        for text in part.read_text().splitlines():
            record = json.loads(text)
            found[(record["partition"], record["offset"])] = record["reason"]
    return found


def wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(2)
    return False


def dead_letter_counts(influx, database: str) -> dict[str, int]:
    rows = influx.query('SELECT sum("count") FROM pipeline_deadletter GROUP BY reason', database)
    return {row["reason"]: row["sum"] for row in rows}


def assert_matches_ground_truth(influx, database: str, manifest: Path, work: Path) -> list[dict]:
    entries = ground_truth.manifest(manifest)
    expected = ground_truth.expected_points(ground_truth.counted_events(entries), WINDOWS)
    expected_dead = {(e["partition"], e["offset"]): e["reason"] for e in entries if e["category"] == "malformed"}
    expected_counts = {r: list(expected_dead.values()).count(r) for r in set(expected_dead.values())}
    total_expected = sum(f["count"] for k, f in expected.items() if k[0] == "telemetry_site")

    def converged() -> bool:
        points = influx_points(influx, database)
        total = sum(f.get("count", 0) for k, f in points.items() if k[0] == "telemetry_site")
        return (total == total_expected and dead_letters(work / "dead_letters") == expected_dead
                and dead_letter_counts(influx, database) == expected_counts)

    wait_for(converged, 240)  # then compare in detail, so a mismatch says what differs
    actual = influx_points(influx, database)
    assert dead_letters(work / "dead_letters") == expected_dead
    missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
    assert not missing and not extra, (missing[:5], extra[:5])
    for key, fields in expected.items():
        assert actual[key]["count"] == fields["count"], key
        assert isinstance(actual[key]["count"], int)
        for name, value in fields.items():
            got = actual[key][name]
            assert math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-12), (key, name, got, value)
        assert set(actual[key]) == set(fields), key
    assert dead_letter_counts(influx, database) == expected_counts
    return entries


@pytest.fixture()
def database(influx) -> str:
    return influx.create_database("e2e")


@pytest.mark.parametrize("eventhubs", [False, True], ids=["kafka-plaintext", "eventhubs-sasl-ssl-bundle-parity"])
def test_pipeline_matches_ground_truth(stack, stack_env, influx, topic, database, tmp_path, eventhubs):
    if eventhubs:
        args, env = bundle_job_args(stack, topic, database, tmp_path)
        job = Job(args, {**stack_env, **env}, tmp_path / "job.log",
                  java_trust_store(stack.info["kafka"]["ca_file"], tmp_path))
        target = ["--eventhubs", "--bootstrap", stack_env["STREAMDASH_EVENTHUBS_BOOTSTRAP"]]
    else:
        job = Job(job_args(stack, topic, database, tmp_path), stack_env, tmp_path / "job.log")
        target = ["--bootstrap", stack.info["kafka"]["bootstrap_servers"]]
    try:
        job.wait_started()
        assert simulate(target, topic, tmp_path / "manifest.jsonl", stack_env).wait(timeout=180) == 0
        entries = assert_matches_ground_truth(influx, database, tmp_path / "manifest.jsonl", tmp_path)
        assert any(e["category"] == "late_beyond" for e in entries), "the run must exercise late data"
        assert any(e["category"] == "duplicate" for e in entries)
        assert job.terminate() == 0, "SIGTERM stops the job cleanly"
    finally:
        job.cleanup()
    assert stack_env["EVENTHUBS_CONNECTION_STRING"] not in job.log.read_text(errors="replace")
    assert stack_env["INFLUXDB_TOKEN"] not in job.log.read_text(errors="replace")
    progress = influx.query("SELECT sum(rows_dropped_by_watermark) FROM pipeline_progress GROUP BY stream", database)
    late_keys = {(e["event"]["device_id"], e["event"]["seq"]) for e in entries if e["category"] == "late_beyond"}
    late_records = sum(1 for e in entries if e["event"] and (e["event"]["device_id"], e["event"]["seq"]) in late_keys)
    dropped = {row["stream"]: row["sum"] for row in progress}
    name = "streamdash-dev" if eventhubs else f"e2e_{database}"  # the dev target keeps conf/dev.toml's job name
    for label in WINDOWS:
        assert dropped[f"{name}_aggregates_{label}"] == late_records


def test_restart_after_sigkill_loses_and_doubles_nothing(stack, stack_env, influx, topic, database, tmp_path):
    """No events beyond the watermark here: Spark advances the watermark only between batches, so the first
    batches after a crash may still accept them (see README). Late data is checked in the run above."""
    args = job_args(stack, topic, database, tmp_path)
    first = Job(args, stack_env, tmp_path / "job-1.log")
    try:
        first.wait_started()
        sender = simulate(["--bootstrap", stack.info["kafka"]["bootstrap_servers"]], topic,
                          tmp_path / "manifest.jsonl", stack_env, extra=("--late-beyond-rate", "0"))
        time.sleep(15)
        first.kill()
    finally:
        first.cleanup()
    second = Job(args, stack_env, tmp_path / "job-2.log")
    try:
        second.wait_started()
        assert sender.wait(timeout=180) == 0
        assert_matches_ground_truth(influx, database, tmp_path / "manifest.jsonl", tmp_path)
    finally:
        second.cleanup()
