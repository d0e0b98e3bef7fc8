"""Drive the real pipeline in tests: the job under spark-submit, the simulator, and the comparison of what
landed in InfluxDB and in the dead-letter folder with ground truth computed from the simulator's manifest."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from streamdash.config import Contract
from streamdash.events import Reason
from streamdash_toolbox.stack.process import cpu_seconds, job_driver
from streamdash_toolbox.stack.spark import submit_argv
from streamdash_toolbox.testing import REPO, ground_truth

LOG_CONFIG = REPO / "conf" / "log4j2.properties"
WINDOWS = {"5s": 5, "20s": 20}
WATERMARK_S = 10
SIMULATION = ["--devices", "8", "--sites", "3", "--rate", "100", "--duration", "40", "--seed", "7",
              "--late-beyond-rate", "0.02", "--malformed-rate", "0.02", "--duplicate-rate", "0.02",
              "--watermark-s", str(WATERMARK_S), "--max-window-s", "20"]


class Job:
    """`spark-submit jobs/stream_to_influx.py` (or another `script` that takes the job's arguments) in its own
    process group; `master` as spark-submit takes it."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, java_options: str = "",
                 master: str = "local[2]", script: Path = REPO / "jobs" / "stream_to_influx.py"):
        argv = submit_argv(script, args, master, log_config=LOG_CONFIG, java_options=java_options)
        self.script = script
        self.log = log
        self.log_start = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **env, "PYSPARK_PYTHON": sys.executable})

    def output(self) -> str:
        """What this run of the job printed (the log may hold earlier runs)."""
        with self.log.open("rb") as log:
            log.seek(self.log_start)
            return log.read().decode(errors="replace")

    def wait_started(self, stall_s: float = 60) -> None:
        """Until the job says it started; it fails if the job exits, or stops using CPU for `stall_s` before."""
        def started() -> bool:
            assert self.proc.poll() is None, f"job exited early:\n{self.output()[-3000:]}"
            return "streamdash.job: started" in self.output()

        assert wait_for(started, stall_s, every_s=1, progress=lambda: int(cpu_seconds(self.proc.pid))), (
            f"the job did not start, nor use a CPU-second in {stall_s} s:\n{self.output()[-3000:]}")

    def driver_pid(self) -> int:
        pid = job_driver(self.proc.pid, self.script.name)
        assert pid is not None, "no driver process"
        return pid

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
    return subprocess.Popen([sys.executable, "-m", "streamdash_toolbox.cli", "simulate", *target, "--topic", topic,
                             *SIMULATION, *extra, "--manifest", str(manifest)], env={**os.environ, **env})


def send_with_late_data(target: list[str], topic: str, work: Path, env: dict[str, str], influx, database: str,
                        extra: tuple[str, ...] = ()) -> Path:
    """Send in two phases, so that every event beyond the watermark meets a watermark that data has set.

    Spark judges late rows against a watermark that lags the data by a batch or two, so the first batches with
    data accept anything; how much they hold depends on timing. Phase 1 sends without late events until
    the aggregate query has processed two batches with data; phase 2 (25 s) sends late events from its start.
    Phase 2 is the simulator run again with its defaults: each device's sequence starts over, as after a reboot,
    while phase 1's events are still in the deduplication's state. Returns the manifest of both phases.
    """
    first = simulate(target, topic, work / "manifest-1.jsonl", env,
                     extra=(*extra, "--late-beyond-rate", "0", "--late-beyond-after-s", "100000", "--duration", "300"))
    query = "SELECT count(input_rows) FROM pipeline_progress WHERE input_rows > 0 GROUP BY stream"

    def watermark_set() -> bool:
        counts = [row["count"] for row in influx.query(query, database) if row["stream"].endswith("_aggregates")]
        return bool(counts) and counts[0] >= 2

    try:
        assert wait_for(watermark_set, STALL_S, progress=lambda: checkpoint_progress(work)), (
            "the job did not process two batches with data")
    finally:
        first.send_signal(signal.SIGTERM)  # stops sending; every record sent is still delivered and recorded
    assert first.wait(timeout=120) == 0
    send_late_phase(target, topic, work / "manifest-2.jsonl", env, extra)
    manifest = work / "manifest.jsonl"
    manifest.write_text((work / "manifest-1.jsonl").read_text() + (work / "manifest-2.jsonl").read_text())
    return manifest


def send_late_phase(target: list[str], topic: str, manifest: Path, env: dict[str, str],
                    extra: tuple[str, ...] = ()) -> None:
    """25 s of the simulator with its defaults, late events from the start (the watermark must be set already)."""
    late = simulate(target, topic, manifest, env,
                    extra=(*extra, "--duration", "25", "--seed", "8", "--late-beyond-after-s", "0"))
    assert late.wait(timeout=120) == 0


def job_args(stack, topic: str, database: str, work: Path, *extra: str) -> list[str]:
    """`--env local` against the stack's plaintext Kafka listener; `extra` are more overrides."""
    overrides = [f"source.bootstrap_servers={stack.info['kafka']['bootstrap_servers']}", f"source.topic={topic}",
                 "source.starting_offsets=earliest", f"influxdb.url={stack.info['influxdb']['url']}",
                 f"influxdb.bucket={database}/autogen", f"dead_letter.path={work / 'dead_letters'}",
                 f"job.checkpoint_location={work / 'checkpoints'}", "job.trigger_interval=1 second",
                 f"job.name=e2e_{database}",
                 f"aggregation.window_sizes={json.dumps([f'{s} seconds' for s in WINDOWS.values()])}",
                 f"aggregation.watermark={WATERMARK_S} seconds", *extra]
    return ["--env", "local", *(arg for override in overrides for arg in ("--set", override))]


def influx_points(influx, database: str, tags: tuple[str, ...] = ()) -> dict[tuple, dict]:
    """{(measurement, window, site, device or None, time): fields}; the device type and `tags` left out."""
    points = {}
    for measurement in ("telemetry_device", "telemetry_site"):
        for row in influx.query(f"SELECT * FROM {measurement}", database):
            key = (measurement, row.pop("window"), row.pop("site"), row.pop("device", None), row.pop("time"))
            for tag in ("device_type", *tags):
                row.pop(tag, None)
            points[key] = {k: v for k, v in row.items() if v is not None}
    return points


def gold_points(spark, table: str) -> dict[tuple, dict]:
    """The gold table's windows as `influx_points` keys and fields them."""
    from pyspark.sql import functions as F

    from streamdash.sinks import delta

    rows = delta.read(spark, table).withColumn("start_ns", F.unix_micros("window_start") * 1000).collect()
    kept = ("count", *Contract().stat_columns())
    return {("telemetry_device" if r.level == "device" else "telemetry_site", r.window, r.site, r.device_id,
             r.start_ns): {name: r[name] for name in kept if r[name] is not None} for r in rows}


def dead_letter_records(folder: Path, stream_suffix: str = "_dead_letters") -> list[dict]:
    """The JSON dead letters of the streams whose name ends in `stream_suffix` (`<job>_dead_letters`: records
    that failed validation; `<job>_aggregates`: points InfluxDB refused)."""
    return [json.loads(text) for part in folder.glob(f"stream=*{stream_suffix}/batch_id=*/part-*.json")
            for text in part.read_text().splitlines()]


def dead_letters(folder: Path) -> dict[tuple[int, int], str]:
    return {(r["partition"], r["offset"]): r["reason"] for r in dead_letter_records(folder)}


# How long a wait on a pipeline's progress lets it stand still, and the most it waits in all.
STALL_S, MAX_WAIT_S = 120, 1800


def wait_for(predicate: Callable[[], object], timeout_s: float, every_s: float = 2.0,
             progress: Callable[[], object] | None = None) -> bool:
    """Whether `predicate()` came true within `timeout_s`; with `progress`, within `timeout_s` of the last change of
    `progress()` (a slow machine moves it slowly, a stuck pipeline not at all), and `MAX_WAIT_S` in all."""
    start = time.monotonic()
    deadline, seen = start + timeout_s, progress() if progress else None
    while not predicate():
        now = time.monotonic()
        if progress is not None and (moved := progress()) != seen:
            seen, deadline = moved, min(now + timeout_s, start + MAX_WAIT_S)
        if now >= deadline:
            return False
        time.sleep(every_s)
    return True


def checkpoint_progress(work: Path) -> int:
    """The batches the checkpoints under `work` have planned and committed, added up: each batch moves it."""
    return sum(max((int(entry.name) for entry in folder.iterdir() if entry.name.isdigit()), default=-1) + 1
               for folder in work.rglob("*") if folder.name in ("offsets", "commits") and folder.is_dir())


def wait_until_read(influx, database: str, records: int, stall_s: float = STALL_S,
                    queries: tuple[str, ...] = ("aggregates",)) -> None:
    """Wait until the progress of each of the job's `queries` (checkpoint folder names: `pipeline.QUERIES`) says
    it has read `records` records: a record that changes no point (a duplicate, a late event) is read after the
    points match, and the counters that count it come with its batch; bronze reads on its own trigger. It fails
    when the counts stand still for `stall_s`."""
    query = "SELECT sum(input_rows) FROM pipeline_progress GROUP BY stream"

    def read() -> list:
        counts = {row["stream"].rsplit("_", 1)[-1]: row["sum"] for row in influx.query(query, database)}
        return [counts.get(name) for name in queries]

    assert wait_for(lambda: read() == [records] * len(queries), stall_s, progress=read), (read(), records)


def dead_letter_counts(influx, database: str) -> dict[str, int]:
    rows = influx.query('SELECT sum("count") FROM pipeline_deadletter GROUP BY reason', database)
    return {row["reason"]: row["sum"] for row in rows}


class GroundTruth:
    """What the job must have written for a manifest, and every difference from what it did write."""

    def __init__(self, manifest: Path, measurements: tuple[str, ...] = ("telemetry_device", "telemetry_site"),
                 sites: Callable[[str], bool] = lambda site: True, contract: Contract | None = None,
                 windows: dict[str, int] = WINDOWS, categories: tuple[str, ...] = ground_truth.COUNTED):
        """Compares the points of `measurements` whose site `sites` accepts, as the job computes them under
        `contract` (default: the simulator's) for `windows` (label: seconds), of the events in `categories`."""
        self.entries = ground_truth.manifest(manifest)
        self.contract = contract or Contract()
        counted = ground_truth.counted_events(self.entries, self.contract.deduplicate, categories)
        expected = ground_truth.expected_points(counted, windows, self.contract)
        self.points = {key: fields for key, fields in expected.items() if key[0] in measurements and sites(key[2])}
        self.measurements = measurements
        self.sites = sites
        self.dead = {(e["partition"], e["offset"]): e["reason"] for e in self.entries if e["category"] == "malformed"}
        reasons = list(self.dead.values())
        self.dead_counts = {reason: reasons.count(reason) for reason in set(reasons)}

    def differences(self, influx, database: str, work: Path) -> list:
        """Empty when InfluxDB and the dead letters hold exactly what they must (and nothing else)."""
        problems = self.window_differences(influx_points(influx, database, tuple(self.contract.tags)))
        if dead_letters(work / "dead_letters") != self.dead:
            problems.append(("dead letter records", len(dead_letters(work / "dead_letters")), len(self.dead)))
        counts = {r: n for r, n in dead_letter_counts(influx, database).items() if r in Reason.ALWAYS_CHECKED}
        if counts != self.dead_counts:
            problems.append(("dead letter counts", counts, self.dead_counts))
        return problems

    def window_differences(self, points: dict[tuple, dict]) -> list:
        """Empty when `points` (as `influx_points` keys and fields them) hold exactly the windows they must."""
        actual = {k: v for k, v in points.items() if k[0] in self.measurements and self.sites(k[2])}
        problems: list = [("missing", key) for key in sorted(set(self.points) - set(actual))]
        problems += [("extra", key) for key in sorted(set(actual) - set(self.points))]
        for key in set(self.points) & set(actual):
            fields, got = self.points[key], actual[key]
            if set(got) != set(fields) or not isinstance(got["count"], int):
                problems.append(("fields", key, sorted(set(got) ^ set(fields))))
                continue
            problems += [("value", key, name, got[name], value) for name, value in fields.items()
                         if not (value.accepts(got[name]) if isinstance(value, ground_truth.Quantile)
                                 else math.isclose(got[name], value, rel_tol=1e-9, abs_tol=1e-12))]
        return problems

    def assert_matches(self, influx, database: str, work: Path, stall_s: float = STALL_S) -> None:
        """Wait until nothing differs, or the job's checkpoints under `work` stand still for `stall_s`, then say
        what still differs."""
        wait_for(lambda: not self.differences(influx, database, work), stall_s,
                 progress=lambda: checkpoint_progress(work))
        problems = self.differences(influx, database, work)
        assert not problems, (len(problems), problems[:8])


def assert_matches_ground_truth(influx, database: str, manifest: Path, work: Path) -> list[dict]:
    truth = GroundTruth(manifest)
    truth.assert_matches(influx, database, work)
    return truth.entries


def java_trust_store(ca_file: str, work: Path) -> str:
    """The JVM trusts the stack's CA as Databricks trusts Azure's: through the default trust store."""
    store = work / "truststore.p12"
    subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "streamdash-ca", "-file", ca_file,
                    "-keystore", str(store), "-storetype", "PKCS12", "-storepass", "changeit"],
                   check=True, capture_output=True)
    return f"-Djavax.net.ssl.trustStore={store} -Djavax.net.ssl.trustStorePassword=changeit"
