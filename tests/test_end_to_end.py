"""simulator -> Kafka (PLAINTEXT or the Event Hubs-style SASL_SSL listener) -> spark-submit job -> InfluxDB,
checked against ground truth computed from the simulator's manifest (restarts and other faults: test_faults)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamdash.sinks import delta
from streamdash_toolbox.stack.process import processes
from streamdash_toolbox.testing import bundle
from streamdash_toolbox.testing.pipeline import (
    WATERMARK_S,
    WINDOWS,
    Job,
    assert_matches_ground_truth,
    java_trust_store,
    job_args,
    send_with_late_data,
    wait_until_read,
)


def bundle_job_args(stack, topic: str, database: str, work: Path) -> tuple[list[str], dict[str, str]]:
    """Parity with Databricks: the dev target's streaming task parameters, read from databricks.yml with its
    variables set as `databricks bundle deploy --var` would set them for this stack, and the environment its job
    cluster fills from the secret scope. Azure's DNS is the one stand-in: the namespace's endpoint is
    swapped for the stack's Event Hubs-style SASL_SSL listener."""
    variables = {"eventhubs_namespace": "streamdash-local", "eventhub_name": topic, "starting_offsets": "earliest",
                 "influxdb_url": stack.info["influxdb"]["url"], "influxdb_bucket": f"{database}/autogen",
                 "checkpoint_location": str(work / "checkpoints"), "dead_letter_location": str(work / "dead_letters"),
                 "notification_email": "oncall@example.com"}
    resolved = bundle.resolve("dev", variables)
    task = resolved.task("streamdash_stream", "stream_to_influx")
    endpoint = "streamdash-local.servicebus.windows.net:9093"
    args = [arg.replace(endpoint, stack.info["kafka"]["eventhubs_bootstrap_servers"])
            for arg in task["spark_python_task"]["parameters"]]
    # What conf/dev.toml would say for this test's ground truth (windows, watermark); local folders stand in for
    # Unity Catalog's tables and volumes.
    for override in (f"aggregation.window_sizes={json.dumps([f'{s} seconds' for s in WINDOWS.values()])}",
                     f"aggregation.watermark={WATERMARK_S} seconds", "job.trigger_interval=1 second",
                     "dead_letter.format=json", f"lakehouse.bronze={work / 'bronze'}",
                     f"lakehouse.gold={work / 'gold'}"):
        args += ["--set", override]
    cluster = next(c["new_cluster"] for c in resolved.job("streamdash_stream")["job_clusters"]
                   if c["job_cluster_key"] == task["job_cluster_key"])
    local_secrets = {"eventhubs-connection-string": stack.secrets["eventhubs_connection_string"],
                     "influxdb-token": stack.secrets["influxdb_token"]}
    env = {name: local_secrets[value.removesuffix("}}").rsplit("/", 1)[1]]
           for name, value in cluster["spark_env_vars"].items()}
    return args, env


@pytest.mark.parametrize("eventhubs", [False, True], ids=["kafka-plaintext", "eventhubs-sasl-ssl-bundle-parity"])
def test_pipeline_matches_ground_truth(stack, stack_env, influx, database, tmp_path, eventhubs, request):
    topic = request.getfixturevalue("eventhub" if eventhubs else "topic")
    if eventhubs:
        args, env = bundle_job_args(stack, topic, database, tmp_path)
        job = Job(args, {**stack_env, **env}, tmp_path / "job.log",
                  java_trust_store(stack.info["kafka"]["ca_file"], tmp_path))
        target = ["--eventhubs", "--bootstrap", stack_env["STREAMDASH_EVENTHUBS_BOOTSTRAP"]]
    else:
        job = Job(job_args(stack, topic, database, tmp_path), stack_env, tmp_path / "job.log")
        target = ["--bootstrap", stack.info["kafka"]["bootstrap_servers"]]
    name = "streamdash-dev" if eventhubs else f"e2e_{database}"  # the dev target keeps conf/dev.toml's job name
    run_and_check(job, target, name, stack_env, influx, topic, database, tmp_path)


def test_pipeline_on_a_spark_standalone_cluster(spark_cluster, spark, stack, stack_env, influx, topic, database,
                                               tmp_path):
    """The same job and checks with `--master spark://...`: executors in the two workers' JVMs, so the
    foreachBatch writers, their serialization and the listener run across processes as on Databricks; and the
    bronze table written from there too."""
    bronze = str(tmp_path / "bronze")
    job = Job(job_args(stack, topic, database, tmp_path, f"lakehouse.bronze={bronze}"), stack_env,
              tmp_path / "job.log", master=spark_cluster["master_url"])
    target = ["--bootstrap", stack.info["kafka"]["bootstrap_servers"]]
    seen = run_and_check(job, target, f"e2e_{database}", stack_env, influx, topic, database, tmp_path,
                         ("aggregates", "bronze"))
    executors = {pid: ppid for pid, ppid, cmdline in seen if b"CoarseGrainedExecutorBackend" in cmdline}
    workers = {pid for pid, _, cmdline in seen if b"deploy.worker.Worker" in cmdline}
    assert len(workers) == 2 and set(executors.values()) == workers, "one executor in each worker"
    python_in_executors = {ppid for _, ppid, cmdline in seen if b"pyspark.daemon" in cmdline and ppid in executors}
    assert python_in_executors, "the job's Python ran in the executors' Python workers"
    app_dirs = [d for work_dir in spark_cluster["work_dirs"] for d in Path(work_dir).glob("app-*/*/stderr")]
    assert len(app_dirs) >= 2, "each worker ran an executor of the job"
    records = len((tmp_path / "manifest.jsonl").read_text().splitlines())
    stored = delta.read(spark, bronze)
    assert stored.count() == records == stored.select("partition", "offset").distinct().count()


def run_and_check(job: Job, target: list[str], name: str, stack_env: dict[str, str], influx, topic: str,
                  database: str, work: Path,
                  queries: tuple[str, ...] = ("aggregates",)) -> list[tuple[int, int, bytes]]:
    """Send with late data, compare InfluxDB with ground truth, wait until each of `queries` read every record,
    stop with SIGTERM, check the job's own metrics. Returns the processes alive while the job ran (after its data
    landed)."""
    try:
        job.wait_started()
        manifest = send_with_late_data(target, topic, work, stack_env, influx, database)
        entries = assert_matches_ground_truth(influx, database, manifest, work)
        wait_until_read(influx, database, len(entries), queries=queries)
        seen = processes()
        assert any(e["category"] == "late_beyond" for e in entries), "the run must exercise late data"
        assert any(e["category"] == "duplicate" for e in entries)
        assert job.terminate() == 0, "SIGTERM stops the job cleanly"
    finally:
        job.cleanup()
    log = job.log.read_text(errors="replace")
    assert stack_env["EVENTHUBS_CONNECTION_STRING"] not in log
    assert stack_env["INFLUXDB_TOKEN"] not in log
    assert "Traceback" not in job.output() and "\tat org.apache" not in job.output(), "a clean stop is quiet"
    progress = influx.query("SELECT sum(rows_dropped_by_watermark), sum(input_rows) AS input_rows, "
                            "sum(duplicates_dropped) AS duplicates FROM pipeline_progress GROUP BY stream", database)

    def key(entry: dict) -> tuple:
        return entry["event"]["device_id"], entry["event"]["seq"], entry["event"]["event_time_ms"]

    late_keys = {key(e) for e in entries if e["category"] == "late_beyond"}
    late_records = sum(1 for e in entries if e["event"] and key(e) in late_keys)
    dropped = {row["stream"]: row["sum"] for row in progress}
    assert dropped[f"{name}_aggregates"] == late_records
    duplicates = {row["stream"]: row["duplicates"] for row in progress}
    counted_once = sum(1 for e in entries if e["category"] == "duplicate" and key(e) not in late_keys)
    assert counted_once > 0 and duplicates[f"{name}_aggregates"] == counted_once
    read = {row["stream"]: row["input_rows"] for row in progress}
    assert read[f"{name}_aggregates"] == len(entries), "the query's input rows are exactly the records in the topic"
    return seen
