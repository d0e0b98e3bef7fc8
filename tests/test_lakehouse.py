"""The Delta tables beside InfluxDB, on real Delta tables on local disk: bronze keeps every record as read, exactly
once through SIGKILLs; gold merges each window on its identity and holds the events too late for the dashboards;
the backfill is gold over a range; Delta dead letters are idempotent and evolve their schema by `mergeSchema`."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from functools import partial

import pytest
from pyspark.sql import functions as F

from streamdash.config import DeadLetterSink, Validation
from streamdash.sinks import delta
from streamdash.sinks.dead_letter import DeadLetters, invalid_records
from streamdash.sinks.delta import BRONZE_SCHEMA, GoldTable
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.transforms.aggregate import windowed_aggregates
from streamdash.transforms.parse import dead_letters, parse_events
from streamdash_toolbox.testing import REPO, ground_truth
from streamdash_toolbox.testing.pipeline import (
    LOG_CONFIG,
    STALL_S,
    WATERMARK_S,
    WINDOWS,
    GroundTruth,
    Job,
    checkpoint_progress,
    dead_letter_records,
    gold_points,
    influx_points,
    job_args,
    send_late_phase,
    simulate,
    wait_for,
)
from streamdash_toolbox.testing.records import T0, raw, with_


def test_bronze_keeps_each_record_as_read_in_the_table_s_schema(spark):
    """The bronze stream's columns are those of the table `create_bronze` makes before its first batch."""
    kept = delta.bronze_records(raw(spark, "{}", headers=[[("iothub-connection-device-id", b"\xa1\x01d")]]))
    assert tuple(kept.columns) == delta.BRONZE_COLUMNS
    assert [f.dataType for f in kept.schema] == [f.dataType for f in spark.createDataFrame([], BRONZE_SCHEMA).schema]


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


@pytest.mark.slow
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


def progress_sum(influx, database: str, field: str, stream: str) -> int:
    rows = influx.query(f'SELECT sum("{field}") FROM pipeline_writes WHERE "stream" = \'{stream}\'', database)
    return rows[0]["sum"] if rows else 0


def wait_until_gold_matches(spark, table: str, truth: GroundTruth, moved) -> None:
    """Until gold holds exactly `truth`'s windows, or the checkpoints stand still for `STALL_S`."""
    assert wait_for(lambda: not truth.window_differences(gold_points(spark, table)), STALL_S, progress=moved), \
        truth.window_differences(gold_points(spark, table))[:8]


def assert_bronze_holds_each_record_once(spark, table: str, truth: GroundTruth) -> None:
    stored = delta.read(spark, table)
    assert stored.count() == len(truth.entries), "every record of the topic once"
    assert stored.select("partition", "offset").distinct().count() == len(truth.entries)


def test_three_queries_survive_a_sigkill_gold_keeps_the_late_events_and_the_backfill_is_gold_over_a_range(
        spark, stack, stack_env, influx, topic, database, tmp_path):
    """The job with both tables runs three queries, SIGKILLed mid-run and started again. Then: InfluxDB holds what
    the simulator sent within the dashboards' watermark; bronze every record of the topic once; gold every window
    with the events that came too late for the dashboards but within gold's lateness, and it counted the windows
    in which it differs from them. `streamdash backfill` of the range into a new table makes gold's windows again,
    and with `--influxdb` rewrites InfluxDB's with the late events too, each of dev-0001's windows judged against
    its limit (crit whatever its temperature) and no other device's."""
    bronze, gold_table = str(tmp_path / "lake" / "bronze"), str(tmp_path / "lake" / "gold")
    limits = tmp_path / "limits.csv"
    limits.write_text("scope,key,measurement,warn_low,warn_high,crit_low,crit_high\n"
                      "device,dev-0001,temperature,,,,-1000\n")
    args = job_args(stack, topic, database, tmp_path, f"lakehouse.bronze={bronze}", f"lakehouse.gold={gold_table}",
                    "lakehouse.trigger_interval=2 seconds", f"limits.path={limits}")
    target = ["--bootstrap", stack.info["kafka"]["bootstrap_servers"]]
    batches = "SELECT count(input_rows) FROM pipeline_progress WHERE input_rows > 0 AND stream =~ /_aggregates$/"

    def batches_with_data() -> int:
        rows = influx.query(batches, database)
        return rows[0]["count"] if rows else 0

    moved = partial(checkpoint_progress, tmp_path)
    job = Job(args, stack_env, tmp_path / "job.log")
    first = simulate(target, topic, tmp_path / "manifest-0.jsonl", stack_env,
                     extra=("--late-beyond-rate", "0", "--late-beyond-after-s", "100000", "--duration", "300"))
    try:
        job.wait_started()
        assert "started 3 queries" in job.output()
        assert wait_for(lambda: batches_with_data() >= 3, STALL_S, progress=moved)
        job.kill()  # SIGKILL, most likely mid-batch in one query or another
        done_before = batches_with_data()
        job = Job(args, stack_env, tmp_path / "job.log")
        job.wait_started()
        # Two batches with data after the restart: Spark's watermark is the data's again before late events come.
        assert wait_for(lambda: batches_with_data() >= done_before + 2, STALL_S, progress=moved)
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 0
    try:
        send_late_phase(target, topic, tmp_path / "manifest-1.jsonl", stack_env)
        manifest = tmp_path / "manifest-all.jsonl"
        manifest.write_text((tmp_path / "manifest-0.jsonl").read_text() + (tmp_path / "manifest-1.jsonl").read_text())
        truth = GroundTruth(manifest)
        truth.assert_matches(influx, database, tmp_path)
        with_late = GroundTruth(manifest, categories=ground_truth.BACKFILLED)
        wait_until_gold_matches(spark, gold_table, with_late, moved)
        assert job.terminate() == 0
    finally:
        job.cleanup()
    assert_bronze_holds_each_record_once(spark, bronze, truth)
    in_influx, in_gold = influx_points(influx, database), gold_points(spark, gold_table)
    differ = {key for key in in_gold if in_gold[key]["count"] != in_influx.get(key, {}).get("count")}
    assert any(e["category"] == "late_beyond" for e in truth.entries) and differ, "late events in gold only"
    assert set(in_influx) <= set(in_gold)
    assert progress_sum(influx, database, "windows_late_for_dashboards", f"e2e_{database}_gold") >= len(differ)

    for measurement in ("telemetry_device", "telemetry_site", "telemetry_limits"):
        influx.query(f"DROP MEASUREMENT {measurement}", database)
    event_ms = [e["event"]["event_time_ms"] for e in truth.entries if e["event"]]
    largest_ms = max(WINDOWS.values()) * 1000
    start = dt.datetime.fromtimestamp(min(event_ms) // largest_ms * largest_ms / 1000, dt.UTC)
    end = dt.datetime.fromtimestamp((max(event_ms) // largest_ms + 1) * largest_ms / 1000, dt.UTC)
    again = str(tmp_path / "lake" / "gold_again")
    run = subprocess.run([sys.executable, "-m", "streamdash_toolbox.cli", "backfill", "--from", start.isoformat(),
                          "--to", end.isoformat(), "--sinks", "gold,influxdb", "--", *args,
                          "--set", f"lakehouse.gold={again}"],
                         cwd=REPO, env={**os.environ, **stack_env}, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "backfill done" in run.stdout + run.stderr, run.stdout[-2000:] + run.stderr[-2000:]
    backfilled = gold_points(spark, again)  # the same windows as gold's, and the same values (to rounding)
    assert set(backfilled) == set(in_gold) and not with_late.window_differences(backfilled)
    rewritten = influx_points(influx, database)
    assert not with_late.window_differences(rewritten)
    judged = {(r["window"], r["time"], r["device"], r["measurement"], r["state"])
              for r in influx.query("SELECT * FROM telemetry_limits", database)}
    assert judged == {(window, time, device, "temperature", "crit")
                      for (measurement, window, _, device, time), fields in rewritten.items()
                      if device == "dev-0001" and fields.get("temperature_mean") is not None}


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


def test_a_measurement_added_to_a_running_deployment_is_carried_over_losing_nothing_and_doubling_nothing(
        spark, stack, stack_env, influx, topic, database, tmp_path):
    """The job runs with three measurements, stops, and starts again with `battery` added and
    `job.on_contract_change = "carry_over"` while the simulator goes on. Then InfluxDB holds every window of what
    was sent exactly once (battery in each window that ended after the carried watermark, and in no earlier one),
    every dead letter and dead-letter count once, bronze every record once, and gold, rebuilt from bronze, every
    window with battery."""
    bronze, gold_table = str(tmp_path / "lake" / "bronze"), str(tmp_path / "lake" / "gold")
    lake = (f"lakehouse.bronze={bronze}", f"lakehouse.gold={gold_table}", "lakehouse.trigger_interval=2 seconds",
            f"lakehouse.gold_lateness={WATERMARK_S} seconds")
    without_battery = "contract.measurements={" + ", ".join(
        f'{name} = {{path = "$.measurements.{name}"}}' for name in ("temperature", "humidity", "pressure")) + "}"
    before = job_args(stack, topic, database, tmp_path, *lake, without_battery)
    after = job_args(stack, topic, database, tmp_path, *lake, "job.on_contract_change=carry_over")
    target = ["--bootstrap", stack.info["kafka"]["bootstrap_servers"]]
    checkpoint = tmp_path / "checkpoints" / "aggregates"
    moved = partial(checkpoint_progress, tmp_path)

    def committed_watermark_ms() -> int:
        commits = [int(name.name) for name in (checkpoint / "commits").glob("[0-9]*")]
        text = (checkpoint / "commits" / str(max(commits))).read_text() if commits else "v1\n{}"
        return json.loads(text.splitlines()[1]).get("nextBatchWatermarkMs", 0)

    sender = simulate(target, topic, tmp_path / "manifest.jsonl", stack_env,
                      extra=("--late-beyond-rate", "0", "--duration", "900"))
    job = Job(before, stack_env, tmp_path / "job.log")
    try:
        job.wait_started()
        assert wait_for(lambda: committed_watermark_ms() > 0 and len(list((checkpoint / "commits").iterdir())) > 4,
                        STALL_S, progress=moved)
        assert job.terminate() == 0
        job = Job(after, stack_env, tmp_path / "job.log")
        job.wait_started()
        assert "the contract changed (measurements)" in job.output(), job.output()[-3000:]
        due = json.loads((tmp_path / "checkpoints" / "carry_over" / "dashboards.json").read_text())
        carried_ms, largest_ms = due["watermark_ms"], max(WINDOWS.values()) * 1000
        # The simulator goes on until the new state has closed every window open at the change.
        closed_ms = due["changed_at_ms"] + 5_000 + largest_ms
        assert wait_for(lambda: committed_watermark_ms() >= closed_ms, STALL_S, progress=moved)
    finally:
        sender.send_signal(signal.SIGTERM)
        assert sender.wait(timeout=120) == 0
    try:
        assert wait_for(lambda: "the carry-over is done" in job.output(), STALL_S, progress=moved), \
            job.output()[-3000:]
        truth = GroundTruth(tmp_path / "manifest.jsonl")
        for (measurement, window, site, device, start_ns), fields in truth.points.items():
            if start_ns // 1_000_000 + WINDOWS[window] * 1000 <= carried_ms:  # closed under the old contract
                truth.points[(measurement, window, site, device, start_ns)] = {
                    name: value for name, value in fields.items() if not name.startswith("battery_")}
        assert any("battery_mean" not in fields for fields in truth.points.values())
        assert any("battery_mean" in fields for fields in truth.points.values())
        truth.assert_matches(influx, database, tmp_path)
        assert len(dead_letter_records(tmp_path / "dead_letters")) == len(truth.dead), "each dead letter once"
        wait_until_gold_matches(spark, gold_table, GroundTruth(tmp_path / "manifest.jsonl"), moved)
        assert job.terminate() == 0
    finally:
        job.cleanup()
    assert_bronze_holds_each_record_once(spark, bronze, truth)
    assert not (tmp_path / "checkpoints" / "carry_over" / "dashboards.json").exists()
    assert list((tmp_path / "checkpoints" / "previous").glob("*/aggregates/commits"))
