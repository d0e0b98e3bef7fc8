"""Every notebook in notebooks/ runs end to end, unchanged, through the local runtime (spark, dbutils, display)
against a real pipeline run, and shows what the ground truth says it should."""

from __future__ import annotations

import json
from collections import Counter
from functools import partial

import pytest

from streamdash.errors import StreamdashError
from streamdash.pipeline import QUERIES
from streamdash_toolbox import notebook_runtime
from streamdash_toolbox.testing import REPO, ground_truth
from streamdash_toolbox.testing.pipeline import (
    STALL_S,
    WATERMARK_S,
    WINDOWS,
    GroundTruth,
    Job,
    assert_matches_ground_truth,
    checkpoint_progress,
    gold_points,
    job_args,
    simulate,
    wait_for,
)

NOTEBOOKS = REPO / "notebooks"


@pytest.fixture(scope="module")
def pipeline_run(stack, stack_env, influx, spark, tmp_path_factory):
    """One pipeline run to explore: the simulator (no events beyond the watermark, so the stream and what
    landed agree exactly, gold included) into a fresh topic, the job until InfluxDB and gold match ground truth,
    then stopped."""
    from streamdash_toolbox.stack import create_topic

    work = tmp_path_factory.mktemp("notebooks")
    topic, database = f"nb-{work.name[-8:]}", influx.create_database("notebooks")
    create_topic(stack.info["kafka"]["bootstrap_servers"], topic, partitions=3)
    lakehouse = [f"lakehouse.bronze={work / 'bronze'}", f"lakehouse.gold={work / 'gold'}"]
    job = Job(job_args(stack, topic, database, work, *lakehouse, "lakehouse.trigger_interval=1 second"), stack_env,
              work / "job.log")
    try:
        job.wait_started()
        sender = simulate(["--bootstrap", stack.info["kafka"]["bootstrap_servers"]], topic, work / "manifest.jsonl",
                          stack_env, extra=("--late-beyond-rate", "0", "--duration", "20"))
        assert sender.wait(timeout=120) == 0
        entries = assert_matches_ground_truth(influx, database, work / "manifest.jsonl", work)
        truth = GroundTruth(work / "manifest.jsonl")
        assert wait_for(lambda: not truth.window_differences(gold_points(spark, str(work / "gold"))), STALL_S,
                        progress=partial(checkpoint_progress, work)), "gold holds what InfluxDB holds"
        assert job.terminate() == 0
    finally:
        job.cleanup()
    overrides = [f"source.bootstrap_servers={stack.info['kafka']['bootstrap_servers']}", f"source.topic={topic}",
                 f"influxdb.url={stack.info['influxdb']['url']}", f"influxdb.bucket={database}/autogen",
                 f"aggregation.window_sizes={json.dumps([f'{s} seconds' for s in WINDOWS.values()])}",
                 f"aggregation.watermark={WATERMARK_S} seconds", *lakehouse]
    widgets = {"env": "local", "overrides": ";".join(overrides)}
    return {"entries": entries, "widgets": widgets, "database": database, "env": stack_env}


@pytest.fixture()
def run_notebook(pipeline_run, spark, monkeypatch):
    monkeypatch.setenv("INFLUXDB_TOKEN", pipeline_run["env"]["INFLUXDB_TOKEN"])

    def run(name: str, **widgets: str) -> dict:
        namespace = notebook_runtime.run(NOTEBOOKS / name, {**pipeline_run["widgets"], **widgets}, spark=spark)
        assert namespace["display"].shown, "the notebook shows something"
        return namespace

    return run


def test_every_notebook_is_in_databricks_source_format():
    names = sorted(path.name for path in NOTEBOOKS.glob("*.py"))
    assert names == ["01_explore_raw_stream.py", "02_tune_windows.py", "03_inspect_influxdb.py",
                     "04_pipeline_health.py", "05_gold_and_influxdb.py"]
    for name in names:
        assert len(notebook_runtime.cells(NOTEBOOKS / name)) >= 3, name


def test_explore_raw_stream_finds_every_bad_record_by_reason(run_notebook, pipeline_run):
    namespace = run_notebook("01_explore_raw_stream.py")
    entries = pipeline_run["entries"]
    expected_bad = Counter(e["reason"] for e in entries if e["category"] == "malformed")
    assert {row["reason"]: row["count"] for row in namespace["bad_by_reason"].collect()} == expected_bad
    assert namespace["events"].count() == sum(1 for e in entries if e["category"] != "malformed")
    assert namespace["raw"].count() == len(entries)


def test_tune_windows_measures_lateness_and_candidate_windows(run_notebook, pipeline_run):
    namespace = run_notebook("02_tune_windows.py", watermarks="1 second, 10 seconds")
    lateness = namespace["lateness"].first()
    late = [e for e in pipeline_run["entries"] if e["category"] == "late_within"]
    assert late and lateness["max_s"] > 1, "late events arrive more than a second behind the newest"
    assert lateness["max_s"] <= WATERMARK_S
    dropped = dict(namespace["dropped_by_watermark"].collect())
    assert dropped["10 seconds"] == 0 and dropped["1 second"] >= 1
    summary = {row["window_size"]: row for row in namespace["window_summary"].collect()}
    assert set(summary) == {f"{s} seconds" for s in WINDOWS.values()}
    assert summary["5 seconds"]["windows"] > summary["20 seconds"]["windows"] > 0


def test_inspect_influxdb_agrees_with_the_stream(run_notebook, pipeline_run):
    namespace = run_notebook("03_inspect_influxdb.py", window_size="5 seconds")
    expected = ground_truth.expected_points(ground_truth.counted_events(pipeline_run["entries"]), WINDOWS)
    site_windows = [key for key in expected if key[0] == "telemetry_site" and key[1] == "5s"]
    assert len(namespace["rows"]) == len(site_windows)
    assert namespace["comparison"].count() == len(site_windows)
    assert namespace["mismatches"].count() == 0


def test_pipeline_health_shows_every_query_and_the_dead_letters(run_notebook, pipeline_run):
    namespace = run_notebook("04_pipeline_health.py", since="1h")
    name = f"e2e_{pipeline_run['database']}"
    assert {row["stream"] for row in namespace["progress"]} == {f"{name}_{query}" for query in QUERIES.values()}
    expected = Counter(e["reason"] for e in pipeline_run["entries"] if e["category"] == "malformed")
    assert {row["reason"]: row["dead_letters"] for row in namespace["dead"]} == expected


def test_a_magic_that_cannot_run_locally_is_refused(tmp_path):
    path = tmp_path / "sql.py"
    path.write_text("# Databricks notebook source\nx = 1\n\n# COMMAND ----------\n\n# MAGIC %sql\n# MAGIC SELECT 1\n")
    with pytest.raises(StreamdashError, match="%sql does not run locally"):
        notebook_runtime.run(path, spark=object())
    path.write_text("x = 1\n")
    with pytest.raises(StreamdashError, match="not a Databricks source notebook"):
        notebook_runtime.run(path, spark=object())


def test_a_failing_cell_is_named_in_one_line(tmp_path):
    path = tmp_path / "fails.py"
    path.write_text("# Databricks notebook source\nx = 1\n\n# COMMAND ----------\n\nraise ValueError('boom\\nmore')\n")
    with pytest.raises(StreamdashError, match=r"^fails.py cell 2 failed: ValueError: boom$"):
        notebook_runtime.run(path, spark=object())


@pytest.mark.parametrize("level", ["site", "device"])
def test_gold_and_influxdb_hold_the_same_windows(run_notebook, pipeline_run, level):
    namespace = run_notebook("05_gold_and_influxdb.py", window_size="5 seconds", level=level)
    expected = ground_truth.expected_points(ground_truth.counted_events(pipeline_run["entries"]), WINDOWS)
    windows = [key for key in expected if key[0] == f"telemetry_{level}" and key[1] == "5s"]
    assert namespace["gold"].count() == len(windows) == namespace["side_by_side"].count()
    assert namespace["differences"].count() == 0
