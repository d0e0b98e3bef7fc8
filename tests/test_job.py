"""The job's own decisions: its session, its refusal of old checkpoints, its progress listener and freshness metric."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Producer
from pyspark.errors import StreamingQueryException
from pyspark.sql import functions as F

from streamdash.checkpoint import STATE_LAYOUT_FILE, check_checkpoint
from streamdash.config import Contract, Validation, load_settings
from streamdash.errors import StreamdashError
from streamdash.metrics import InfluxProgressListener, epoch_ns, writes_line
from streamdash.pipeline import query_starters
from streamdash.session import (
    HOTSPOT_HUGE_METHOD_BYTES,
    failure_summary,
    finish_state_store_maintenance,
    session_settings,
)
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.report import WriteReport
from streamdash.storage import file_system
from streamdash.transforms.aggregate import state_layout
from streamdash.transforms.parse import parse_events
from streamdash_toolbox.testing import REPO
from streamdash_toolbox.testing.pipeline import dead_letter_records, wait_for
from streamdash_toolbox.testing.records import GOOD, raw, with_

NO_DATA_BATCHES = "spark.sql.streaming.noDataMicroBatches.enabled"
FILE_SYSTEM_MANAGER = "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"


def test_a_local_checkpoint_is_renamed_with_the_file_system_api(spark, tmp_path, monkeypatch):
    """FileContext's rename runs `readlink` in a child process without Hadoop's native library; on the local
    disk the FileSystem API's rename(2) is atomic too. Other file systems (dbfs, abfss) keep Spark's default."""
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    settings = load_settings("local", REPO / "conf", [f"job.checkpoint_location={tmp_path}"])
    assert file_system(spark, str(tmp_path)).getUri().getScheme() == "file"
    manager = "spark.sql.streaming.checkpointFileManagerClass"
    assert session_settings(settings, 2, local_checkpoint=True)[manager] == FILE_SYSTEM_MANAGER
    assert manager not in session_settings(settings, 2, local_checkpoint=False)


def test_a_stage_too_large_for_the_jit_runs_on_its_smaller_methods(spark, monkeypatch):
    """Whole-stage codegen compiles the parse into a method larger than HotSpot ever JIT-compiles; the job's
    session sets Spark's limit to HotSpot's, so Spark runs that stage on its per-operator methods instead.
    If a Spark upgrade makes every stage small enough, the first assertion says the setting has become moot."""
    plan = parse_events(raw(spark, json.dumps(GOOD)), Validation())._jdf.queryExecution().executedPlan()
    stages = spark.sparkContext._jvm.org.apache.spark.sql.execution.debug.package.codegenStringSeq(plan)
    largest = max(stages.apply(i)._3().maxMethodCodeSize() for i in range(stages.size()))
    assert largest > HOTSPOT_HUGE_METHOD_BYTES, f"largest generated method {largest} bytes: the limit is moot"
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    settings = session_settings(load_settings("local", REPO / "conf", []), 2)
    assert int(settings["spark.sql.codegen.hugeMethodLimit"]) <= HOTSPOT_HUGE_METHOD_BYTES


def test_each_trigger_reads_and_parses_the_topic_once(spark, stack, topic, influx, database, tmp_path, monkeypatch):
    """Windows and dead letters come from one read and parse of each record: the dead letters' branch reuses the
    windows' shuffle (a reused exchange) instead of scanning the topic a second time."""
    bootstrap = stack.info["kafka"]["bootstrap_servers"]
    producer = Producer({"bootstrap.servers": bootstrap})
    now_ms = int(time.time() * 1000)
    for seq in range(9):
        producer.produce(topic, with_(seq=seq, eventTime=now_ms).encode(), key=b"dev-1")
    producer.produce(topic, b"{not json", key=b"dev-1", timestamp=1_000)  # its producer's clock says 1970
    assert producer.flush(30) == 0
    monkeypatch.setenv("INFLUXDB_TOKEN", stack.secrets["influxdb_token"])
    settings = load_settings("local", REPO / "conf", [
        f"source.bootstrap_servers={bootstrap}", f"source.topic={topic}", "source.starting_offsets=earliest",
        f"influxdb.url={influx.url}", f"influxdb.bucket={database}/autogen", f"dead_letter.path={tmp_path / 'dl'}",
        f"job.checkpoint_location={tmp_path / 'checkpoints'}", "job.name=once"])
    [start] = query_starters(spark, settings).values()
    # As in the job's session: no batch without data, so the last batch the query ran is the one with the records.
    spark.conf.set(NO_DATA_BATCHES, "false")
    try:
        query = start()
    finally:
        spark.conf.unset(NO_DATA_BATCHES)
    tracker = spark.sparkContext.statusTracker()
    try:
        assert wait_for(lambda: query.recentProgress, 120, every_s=0.2), "the first batch"
        plan = query._jsq.explainInternal(False)  # the last batch's executed plan
        [progress] = query.recentProgress
        # A batch without dead letters is one Spark job: the windows are written and the dead letters counted in
        # one pass, and no dead letter is read again.
        jobs_before = len(tracker.getJobIdsForGroup(str(query.runId)))
        producer.produce(topic, with_(seq=9, eventTime=now_ms).encode(), key=b"dev-1")
        assert producer.flush(30) == 0
        assert wait_for(lambda: len(query.recentProgress) == 2, 120, every_s=0.2), "the second batch"
        second_batch_jobs = len(tracker.getJobIdsForGroup(str(query.runId))) - jobs_before
    finally:
        query.stop()
    assert plan.count("MicroBatchScan") == 1 and "ReusedExchange" in plan, plan
    # Two shuffles, as Spark's own deduplicated windows take: by the deduplication key (shared by the dead letters'
    # branch), then by the windows' keys; the watermark above the first would have cost a third.
    assert plan.count("- Exchange hashpartitioning") == 2, plan
    assert progress["numInputRows"] == 10, "a second scan would count each record again"
    assert [(r["offset"], r["reason"]) for r in dead_letter_records(tmp_path / "dl", "once_dead_letters")] == [
        (9, "malformed_json")]
    assert progress["observedMetrics"]["dead_letters"]["dead_letters"] == 1
    # Its counter is dated by the batch (the job's clock), not by the record's 1970 timestamp.
    [counted] = influx.query("SELECT * FROM pipeline_deadletter", database)
    started_ns = epoch_ns(progress["timestamp"])
    assert (counted["reason"], counted["count"]) == ("malformed_json", 1)
    assert started_ns <= counted["time"] < started_ns + progress["batchDuration"] * 1_000_000
    [site] = influx.query("SELECT * FROM telemetry_site WHERE \"window\" = '10s'", database)
    assert site["count"] == 10
    assert second_batch_jobs == 1
    # The handler writes what it saw: when the windows were written (within the batch, before its dead letters),
    # how fresh they were, and what it wrote.
    [writes, _] = influx.query("SELECT * FROM pipeline_writes", database)
    assert (writes["stream"], writes["batch_id"]) == ("once_aggregates", progress["batchId"])
    assert (writes["points_written"], writes["points_refused"], writes["dead_letters_written"]) == (4, 0, 1)
    letters_written_ns = max(path.stat().st_mtime_ns for path in (tmp_path / "dl").rglob("*.json"))
    coarse_clock_ns = 10_000_000  # a file's time is the kernel's coarse clock, up to a tick behind; a Spark job is not
    assert started_ns < writes["time"] <= letters_written_ns + coarse_clock_ns
    assert writes["time"] < started_ns + progress["batchDuration"] * 1_000_000
    assert writes["freshness_ms"] == (writes["time"] - now_ms * 1_000_000) // 1_000_000


LAYOUT = state_layout(Contract())


def test_a_checkpoint_of_the_old_per_window_layout_is_refused(spark, tmp_path):
    (tmp_path / "aggregates_10s" / "offsets").mkdir(parents=True)
    with pytest.raises(StreamdashError) as error:
        check_checkpoint(spark, str(tmp_path), LAYOUT)
    message = str(error.value)
    assert "aggregates_10s" in message and "job.checkpoint_location" in message and str(tmp_path) in message


def test_a_checkpoint_of_the_separate_dead_letter_query_is_refused(spark, tmp_path):
    """Up to 0.2 the dead letters had a query of their own, often behind the aggregates: continuing from the
    aggregates' checkpoint alone would never dead-letter the records between the two."""
    (tmp_path / "aggregates" / "offsets").mkdir(parents=True)
    (tmp_path / "dead_letters" / "offsets").mkdir(parents=True)
    with pytest.raises(StreamdashError, match=r"earlier query layout \(dead_letters\)"):
        check_checkpoint(spark, str(tmp_path), LAYOUT)


def test_a_checkpoint_whose_duplicates_were_keyed_without_the_event_time_is_refused(spark, tmp_path):
    """Up to 0.3 the deduplication state was keyed by (device_id, seq): Spark cannot read it with another key."""
    (tmp_path / "aggregates" / "offsets").mkdir(parents=True)
    with pytest.raises(StreamdashError) as error:
        check_checkpoint(spark, str(tmp_path), LAYOUT)
    assert str(tmp_path) in str(error.value) and "0.3 or earlier" in str(error.value)
    assert "device_id, seq, event_time" in str(error.value) and "\n" not in str(error.value)


def test_a_new_checkpoint_records_its_state_layout_and_another_layout_is_refused(spark, tmp_path):
    check_checkpoint(spark, str(tmp_path / "new"), LAYOUT)
    assert json.loads((tmp_path / "new" / STATE_LAYOUT_FILE).read_text()) == LAYOUT
    (tmp_path / "new" / "aggregates" / "offsets").mkdir(parents=True)
    check_checkpoint(spark, str(tmp_path / "new"), LAYOUT)  # the same layout continues
    other = Contract(measurements={"co2": {"path": "$.co2"}}, sequence=None)
    with pytest.raises(StreamdashError, match=r"another layout \(it differs in measurements\)") as error:
        check_checkpoint(spark, str(tmp_path / "new"), state_layout(other))
    assert str(tmp_path / "new") in str(error.value) and 'job.on_contract_change = "carry_over"' in str(error.value)


@pytest.mark.parametrize(("newest_event_ns", "freshness_ms"), [
    (epoch_ns("2026-11-29T09:59:59.000Z"), 1300),  # the newest event was 1.3 s old when the windows were written
    (epoch_ns("2026-11-29T10:00:00.500Z"), 0),  # stamped ahead of the clock: never negative
    (None, None),  # no windows: no freshness
])
def test_freshness_is_the_age_of_the_newest_event_when_its_windows_were_written(newest_event_ns, freshness_ms):
    written_ns = epoch_ns("2026-11-29T10:00:00.300Z")
    point = writes_line("q_aggregates", 3, written_ns, WriteReport(written=4, newest_event_ns=newest_event_ns), 0, 0, 0)
    assert point.endswith(f" {written_ns}") and "sink_blocked_ms" not in point
    assert (f"freshness_ms={freshness_ms}i" in point) if freshness_ms is not None else "freshness_ms" not in point
    assert "sink_blocked_ms=2500i" in writes_line("q", 3, written_ns, WriteReport(), 0, 0, 2500)


def test_the_progress_listener_writes_each_batch_as_spark_reported_it(spark, influx, tmp_path):
    """The listener reads each progress event as the event's JSON (one py4j call, not one per field); every batch
    lands in `pipeline_progress` with what Spark reported for it, observed metrics included."""
    database = influx.create_database("progress")
    listener = InfluxProgressListener(InfluxWriter(url=influx.url, org="streamdash", bucket=f"{database}/autogen",
                                                   token=influx.token))
    spark.streams.addListener(listener)
    rows = spark.readStream.format("rate").option("rowsPerSecond", 50).load()
    query = (rows.observe("seen", F.count(F.lit(1)).alias("seen")).writeStream.format("noop")
             .queryName("listener_test").option("checkpointLocation", str(tmp_path / "checkpoint"))
             .trigger(processingTime="200 milliseconds").start())
    try:
        assert wait_for(lambda: len([p for p in query.recentProgress if p.numInputRows]) >= 3, 60)
    finally:
        query.stop()
        assert listener.wait_terminated({str(query.id)}, timeout_s=30)
        spark.streams.removeListener(listener)
    reported = {p.batchId: (p.numInputRows, p.durationMs["addBatch"], p.durationMs["triggerExecution"])
                for p in query.recentProgress}
    written = influx.query('SELECT "batch_id", "input_rows", "seen", "add_batch_ms", "trigger_execution_ms" '
                           "FROM pipeline_progress WHERE \"stream\" = 'listener_test'", database)
    assert {row["batch_id"]: (row["input_rows"], row["add_batch_ms"], row["trigger_execution_ms"])
            for row in written} == reported
    assert all(row["seen"] == row["input_rows"] for row in written if row["input_rows"])


def test_state_store_maintenance_is_finished_before_the_job_exits_and_restarts_on_demand(spark, tmp_path):
    """A clean stop leaves no snapshot upload running into the JVM's shutdown; a query started afterwards (as in a
    notebook that runs the job again) still gets its maintenance."""
    state_store = spark._jvm.org.apache.spark.sql.execution.streaming.state.StateStore
    spark.conf.set("spark.sql.streaming.stateStore.maintenanceInterval", "100ms")

    def stateful_query(name):
        rows = spark.readStream.format("rate").option("rowsPerSecond", 50).load()
        return (rows.dropDuplicates(["value"]).writeStream.format("noop").queryName(name)
                .option("checkpointLocation", str(tmp_path / name)).trigger(processingTime="100 milliseconds")
                .start())

    started = []
    try:
        started.append(first := stateful_query("maintained"))
        assert wait_for(lambda: len(first.recentProgress) >= 3 and state_store.isMaintenanceRunning(), 60)
        first.stop()
        finish_state_store_maintenance(spark)
        assert not state_store.isMaintenanceRunning()
        started.append(second := stateful_query("maintained_again"))
        assert wait_for(lambda: len(second.recentProgress) >= 1 and state_store.isMaintenanceRunning(), 60)
    finally:
        for query in started:  # the session is shared: a failed assertion must not leave a query running
            query.stop()
        spark.conf.unset("spark.sql.streaming.stateStore.maintenanceInterval")


def test_a_failed_query_is_summed_up_by_spark_s_error_class_and_message(spark, tmp_path):
    """A Spark error inside foreachBatch reaches the driver wrapped in py4j's 'An exception was raised by the
    Python Proxy' and a Python traceback; the job's one line names Spark's error class and message instead."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "1.json").write_text('{"x": null}\n')

    def quantile_of_nothing(batch, batch_id):
        batch.select(F.kll_sketch_get_quantile_double(F.kll_sketch_agg_double(F.col("x")), F.lit(0.95))).collect()

    query = (spark.readStream.schema("x double").json(str(source)).writeStream.foreachBatch(quantile_of_nothing)
             .option("checkpointLocation", str(tmp_path / "cp")).start())
    with pytest.raises(StreamingQueryException):
        query.awaitTermination(120)
    assert "Python Proxy" in str(query.exception())
    summary = failure_summary(query.exception())
    assert summary.startswith("[KLL_SKETCH_INVALID_INPUT] ") and "must not be empty" in summary
    assert "\n" not in summary and "Traceback" not in summary


def test_a_full_disk_in_the_handler_is_named_in_the_one_line(spark, tmp_path):
    """A write to a full file system inside foreachBatch (here /dev/full, which is always full) fails the query
    through py4j's 'Python Proxy' text; the one line names the cause, not the wrapper."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "1.json").write_text('{"x": 1}\n')

    def write_to_a_full_disk(batch, batch_id):
        with open("/dev/full", "w") as full:
            full.write(json.dumps([row.x for row in batch.collect()]))

    query = (spark.readStream.schema("x double").json(str(source)).writeStream.foreachBatch(write_to_a_full_disk)
             .option("checkpointLocation", str(tmp_path / "cp")).start())
    with pytest.raises(StreamingQueryException):
        query.awaitTermination(120)
    assert "Python Proxy" in str(query.exception())
    assert failure_summary(query.exception()) == "OSError: [Errno 28] No space left on device"


def test_a_failed_query_starts_again_while_another_goes_on_until_it_fails_too_often_in_a_row(spark, tmp_path,
                                                                                               caplog):
    """One query's failure (gold's storage, say) does not stop the dashboards': it is named in one line and started
    again, up to `Restarts.MAX` times in a row without a committed batch; a failure with nothing else running ends
    the job, as does one more in a row."""
    from streamdash.job import Restarts

    def failing(batch, batch_id):
        raise OSError("[Errno 28] No space left on device")

    def query(name, handler=None):
        rows = spark.readStream.format("rate").option("rowsPerSecond", 10).load()
        writer = rows.writeStream.queryName(name).option("checkpointLocation", str(tmp_path / name))
        writer = writer.foreachBatch(handler) if handler else writer.format("noop")
        return writer.trigger(processingTime="100 milliseconds").start()

    queries = {"going_on": query("going_on"), "gold": query("gold", failing)}
    try:
        restarts = Restarts(spark, {name: str(tmp_path / name) for name in queries})
        for attempt in range(1, Restarts.MAX + 1):
            with pytest.raises(StreamingQueryException):
                queries["gold"].awaitTermination(60)
            assert restarts.allowed("gold", queries) and restarts.delay_s("gold") == Restarts.DELAY_S * attempt
            assert caplog.records[-1].getMessage() == (
                "query gold failed: OSError: [Errno 28] No space left on device; the other queries go on, and it "
                f"starts again from its checkpoint in {Restarts.DELAY_S * attempt:.0f} s ({attempt} of 3 in a row)")
            queries["gold"] = query("gold", failing)
        with pytest.raises(StreamingQueryException):
            queries["gold"].awaitTermination(60)
        assert not restarts.allowed("gold", queries), "one more in a row"
        assert queries["going_on"].isActive
        queries["going_on"].stop()
        assert not Restarts(spark, {}).allowed("gold", queries), "nothing else running"
    finally:
        for running in queries.values():
            running.stop()
