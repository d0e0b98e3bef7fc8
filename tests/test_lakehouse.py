"""The Delta tables beside InfluxDB, on real Delta tables on local disk: bronze appends each batch once, gold merges
each window on its identity, Delta dead letters are idempotent and evolve their schema by `mergeSchema`."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from functools import partial

import pytest
from pyspark.sql import functions as F

from streamdash.config import DeadLetterSink, Validation
from streamdash.sinks import delta
from streamdash.sinks.dead_letter import DeadLetters, invalid_records
from streamdash.sinks.delta import BronzeTable, GoldTable
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.micro_batch import together
from streamdash.transforms.aggregate import windowed_aggregates
from streamdash.transforms.batch import RECORD_COLUMNS
from streamdash.transforms.parse import dead_letters, parse_events
from streamdash_toolbox.testing import REPO, ground_truth
from streamdash_toolbox.testing.pipeline import (
    LOG_CONFIG,
    STALL_S,
    WINDOWS,
    GroundTruth,
    Job,
    checkpoint_progress,
    influx_points,
    job_args,
    send_late_phase,
    simulate,
    wait_for,
)
from streamdash_toolbox.testing.records import T0, raw, with_

RECORD_SCHEMA = ("key string, value binary, topic string, partition int, offset long, kafka_timestamp timestamp, "
                 "kafka_timestamp_type int, ingested_at timestamp, reason string")


def records(spark, offsets: range):
    rows = [(f"dev-{o % 3}", f'{{"n": {o}}}'.encode(), "telemetry", 0, o, T0, 1, T0 + dt.timedelta(seconds=1),
             None if o % 2 else "malformed_json") for o in offsets]
    return spark.createDataFrame(rows, RECORD_SCHEMA)


def test_the_record_schema_is_the_query_s(spark):
    assert tuple(records(spark, range(1)).columns) == RECORD_COLUMNS


def test_bronze_appends_each_batch_once_and_a_new_checkpoint_starts_afresh(spark, tmp_path):
    table = str(tmp_path / "bronze")
    first = BronzeTable(table, lambda: "query-1")
    assert first.write(records(spark, range(0, 10)), 0).written == 10
    first.write(records(spark, range(0, 10)), 0)  # the same batch replayed after a crash: skipped
    first.write(records(spark, range(10, 15)), 1)
    written = delta.read(spark, table)
    assert written.count() == 15 and written.select("topic", "partition", "offset").distinct().count() == 15
    assert {row.ingest_date for row in written.collect()} == {T0.date()}
    assert written.where("reason IS NULL").count() == 7  # valid and invalid records alike
    # A new checkpoint (another query id) numbers its batches from 0 again: they are new data, not replays.
    BronzeTable(table, lambda: "query-2").write(records(spark, range(15, 20)), 0)
    assert delta.read(spark, table).count() == 20


def windows(spark, rows):
    """rows: (device, seconds after T0, temperature)."""
    events = spark.createDataFrame(
        [(d, "s1", "t", T0 + dt.timedelta(seconds=sec), i, temp, None, None, None)
         for i, (d, sec, temp) in enumerate(rows)],
        "device_id string, site string, device_type string, event_time timestamp, seq long, temperature double, "
        "humidity double, pressure double, battery double")
    return windowed_aggregates(events, ["10 seconds"])


def gold(spark, table: str) -> dict:
    return {(r.level, r.site, r.device_id, r.window_start): (r["count"], r.temperature_mean)
            for r in delta.read(spark, table).collect()}


def test_gold_merges_each_window_on_its_identity_and_a_replay_changes_nothing(spark, tmp_path):
    table = str(tmp_path / "gold")
    sink = GoldTable(table)
    sink.write(windows(spark, [("a", 1, 10.0), ("b", 2, 20.0)]), 0)
    assert gold(spark, table) == {("device", "s1", "a", T0): (1, 10.0), ("device", "s1", "b", T0): (1, 20.0),
                                  ("site", "s1", None, T0): (2, 15.0)}
    # Update mode re-emits a changed window with its whole state: its row is updated, the site row (null device) too.
    again = windows(spark, [("a", 1, 10.0), ("a", 3, 30.0), ("b", 2, 20.0)]).where("device_id = 'a' OR level = 'site'")
    sink.write(again, 1)
    after = gold(spark, table)
    assert after == {("device", "s1", "a", T0): (2, 20.0), ("device", "s1", "b", T0): (1, 20.0),
                     ("site", "s1", None, T0): (3, 20.0)}
    sink.write(again, 1)  # replayed
    assert gold(spark, table) == after and delta.read(spark, table).count() == 3
    # Windows far apart in one batch: the merge's range covers both ends; an old window's row is still matched.
    sink.write(windows(spark, [("b", 2, 40.0), ("c", 3605, 50.0)]).where("level = 'device'"), 2)
    later = T0 + dt.timedelta(seconds=3600)
    assert gold(spark, table) == {**after, ("device", "s1", "b", T0): (1, 40.0),
                                  ("device", "s1", "c", later): (1, 50.0)}
    version = spark.sql(f"DESCRIBE HISTORY delta.`{table}`").agg(F.max("version")).first()[0]
    assert sink.write(windows(spark, [("a", 1, 10.0)]).where("false"), 3).written == 0  # no window: no commit
    assert spark.sql(f"DESCRIBE HISTORY delta.`{table}`").agg(F.max("version")).first()[0] == version
    columns = delta.read(spark, table).columns
    assert "window_start" in columns and "newest_event_ns" not in columns and "batch_id" in columns


def test_the_lakehouse_writes_run_together_and_a_failure_is_raised_after_both_ended(spark):
    ended, threads = [], set()

    def write(name: str, fail: bool = False):
        def call():
            threads.add(threading.get_ident())
            time.sleep(0.5)
            ended.append(name)
            if fail:
                raise RuntimeError(f"{name} failed")
        return call

    together([write("gold"), write("bronze")], spark)
    assert sorted(ended) == ["bronze", "gold"] and len(threads) == 2
    ended.clear()
    with pytest.raises(RuntimeError, match="gold failed"):
        together([write("gold", fail=True), write("bronze")], spark)
    assert sorted(ended) == ["bronze", "gold"]


def test_delta_dead_letters_are_idempotent_and_gain_the_detail_column_by_merge_schema(spark, influx, database,
                                                                                      tmp_path):
    table = str(tmp_path / "dead_letters")
    # A table as streamdash 0.1 wrote it, before dead letters had `detail`.
    letters = invalid_records(dead_letters(parse_events(raw(spark, b"{oops", with_(seq="x")), Validation())))
    letters.drop("detail").write.format("delta").save(table)
    writer = InfluxWriter(url=influx.url, org="streamdash", bucket=f"{database}/autogen", token=influx.token)
    config = DeadLetterSink(path=table, format="delta")
    planned_ms = 1_796_000_000_000  # when query-1 planned its batch 3 (its offset log's time)
    sink = DeadLetters(config, writer, "s_dead_letters", lambda batch_id: planned_ms, lambda: "query-1")
    assert sink.write(letters, 3).written == 2
    sink.write(letters, 3)  # replayed: skipped
    written = delta.read(spark, table)
    assert "detail" in written.columns and written.count() == 4  # the two old rows and the batch, once
    assert sorted(r.reason for r in written.where("batch_id = 3").collect()) == ["malformed_json", "wrong_type"]
    counts = influx.query('SELECT "count" FROM pipeline_deadletter', database)
    assert sum(row["count"] for row in counts) == 2  # a count point per (stream, reason, batch): replays overwrite
    # A new checkpoint's batch 3 is new data, not a replay of the old checkpoint's, planned at another time.
    DeadLetters(config, writer, "s_dead_letters", lambda batch_id: planned_ms + 60_000, lambda: "query-2").write(
        letters, 3)
    assert delta.read(spark, table).count() == 6
    counts = influx.query('SELECT "count" FROM pipeline_deadletter', database)
    assert sum(row["count"] for row in counts) == 4


def test_bronze_and_gold_survive_a_sigkill_and_a_backfill_rebuilds_influxdb_from_bronze(
        spark, stack, stack_env, influx, topic, database, tmp_path):
    """The job with both tables, SIGKILLed mid-run and started again: bronze holds every record of the topic once
    and gold every window InfluxDB holds, with the same values; then, with InfluxDB's windows dropped,
    `streamdash backfill` rebuilds them from bronze, exactly as computed from what the simulator sent (the events
    that came too late for the stream included: a backfill has no watermark)."""
    bronze, gold_table = str(tmp_path / "lake" / "bronze"), str(tmp_path / "lake" / "gold")
    args = job_args(stack, topic, database, tmp_path, f"lakehouse.bronze={bronze}", f"lakehouse.gold={gold_table}")
    target = ["--bootstrap", stack.info["kafka"]["bootstrap_servers"]]
    batches = "SELECT count(input_rows) FROM pipeline_progress WHERE input_rows > 0"

    def batches_with_data() -> int:
        rows = influx.query(batches, database)
        return rows[0]["count"] if rows else 0

    job = Job(args, stack_env, tmp_path / "job.log")
    first = simulate(target, topic, tmp_path / "manifest-0.jsonl", stack_env,
                     extra=("--late-beyond-rate", "0", "--late-beyond-after-s", "100000", "--duration", "300"))
    try:
        job.wait_started()
        assert wait_for(lambda: batches_with_data() >= 3, STALL_S, progress=partial(checkpoint_progress, tmp_path))
        job.kill()  # SIGKILL, most likely mid-batch (a batch takes about its 1 s trigger)
        done_before = batches_with_data()
        job = Job(args, stack_env, tmp_path / "job.log")
        job.wait_started()
        # Two batches with data after the restart: Spark's watermark is the data's again before late events come.
        assert wait_for(lambda: batches_with_data() >= done_before + 2, STALL_S,
                        progress=partial(checkpoint_progress, tmp_path))
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 0
    try:
        send_late_phase(target, topic, tmp_path / "manifest-1.jsonl", stack_env)
        manifest = tmp_path / "manifest-all.jsonl"
        manifest.write_text((tmp_path / "manifest-0.jsonl").read_text() + (tmp_path / "manifest-1.jsonl").read_text())
        truth = GroundTruth(manifest)
        truth.assert_matches(influx, database, tmp_path)
        # What is compared below: bronze. (Not pipeline_progress: a SIGKILL loses the progress events still queued.)
        assert wait_for(lambda: delta.read(spark, bronze).count() >= len(truth.entries), 120)
        assert job.terminate() == 0
    finally:
        job.cleanup()
    stored = delta.read(spark, bronze)
    assert stored.count() == len(truth.entries), "every record of the topic once, through the SIGKILL"
    assert stored.select("partition", "offset").distinct().count() == len(truth.entries)
    invalid = {(r.partition, r.offset): r.reason for r in stored.where("reason IS NOT NULL").collect()}
    assert invalid == truth.dead
    windows_in_influx = influx_points(influx, database)
    rows = delta.read(spark, gold_table).withColumn("start_ns", F.unix_micros("window_start") * 1000).collect()
    in_gold = {("telemetry_device" if r.level == "device" else "telemetry_site", r.window, r.site, r.device_id,
                r.start_ns): (r["count"], r.temperature_mean) for r in rows}
    assert in_gold == {key: (fields["count"], fields.get("temperature_mean"))
                       for key, fields in windows_in_influx.items()}, "gold holds exactly InfluxDB's windows"

    influx.query("DROP MEASUREMENT telemetry_device", database)
    influx.query("DROP MEASUREMENT telemetry_site", database)
    assert influx_points(influx, database) == {}
    event_ms = [e["event"]["event_time_ms"] for e in truth.entries if e["event"]]
    largest_ms = max(WINDOWS.values()) * 1000
    start = dt.datetime.fromtimestamp(min(event_ms) // largest_ms * largest_ms / 1000, dt.UTC)
    end = dt.datetime.fromtimestamp((max(event_ms) // largest_ms + 1) * largest_ms / 1000, dt.UTC)
    run = subprocess.run([sys.executable, "-m", "streamdash_toolbox.cli", "backfill", "--from", start.isoformat(),
                          "--to", end.isoformat(), "--", *args], cwd=REPO, env={**os.environ, **stack_env},
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "backfill done" in run.stdout + run.stderr, run.stdout[-2000:] + run.stderr[-2000:]
    backfilled = GroundTruth(manifest, categories=ground_truth.BACKFILLED)
    assert any(e["category"] == "late_beyond" for e in truth.entries)
    problems = backfilled.differences(influx, database, tmp_path)
    assert not problems, (len(problems), problems[:8])


def test_a_session_that_cannot_write_delta_is_refused_at_start_in_one_line(stack, stack_env, topic, database,
                                                                         tmp_path):
    """spark-submit by hand without Delta's settings, with a table configured: one line at start, not a failure at
    the first write minutes later."""
    from streamdash_toolbox.stack.install import spark_submit_conf
    from streamdash_toolbox.stack.spark import submit_argv

    argv = submit_argv(REPO / "jobs" / "stream_to_influx.py",
                       job_args(stack, topic, database, tmp_path, f"lakehouse.bronze={tmp_path / 'bronze'}"),
                       log_config=LOG_CONFIG)
    delta_values = spark_submit_conf()[1::2]
    without_delta = [arg for i, arg in enumerate(argv)
                     if arg not in delta_values and not (arg == "--conf" and argv[i + 1] in delta_values)]
    assert len(without_delta) == len(argv) - 2 * len(delta_values)
    run = subprocess.run(without_delta, capture_output=True, text=True, timeout=300,
                         env={**os.environ, **stack_env, "PYSPARK_PYTHON": sys.executable})
    errors = [line for line in (run.stdout + run.stderr).splitlines() if " ERROR streamdash.job: " in line]
    assert run.returncode == 1 and len(errors) == 1, (run.stdout + run.stderr)[-3000:]
    assert "lakehouse.bronze: this Spark session cannot write Delta tables" in errors[0]
