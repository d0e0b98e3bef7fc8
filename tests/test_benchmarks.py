"""The side-by-side benchmark keeps working: a small run of every phase, checked for complete, sane results.

Its numbers are not judged here (tests check behaviour, never wall time); `python -m benchmarks.side_by_side` with
its defaults is the measurement.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from benchmarks import scale_out, sizing

from streamdash_toolbox.testing import REPO


@pytest.mark.stack  # starts a stack of its own
def test_a_small_side_by_side_run_measures_every_side(tmp_path):
    argv = [sys.executable, "-m", "benchmarks.side_by_side", "--events", "3000", "--rates", "500",
            "--live-s", "10", "--warmup-s", "10", "--soak-s", "15", "--soak-rate", "300", "--points", "5000",
            "--lakehouse-rates", "500", "--out", str(tmp_path)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())
    drains = [row for row in rows if row["side"].startswith("(b)")]
    assert len(drains) == 3 and "'5 minutes'" in drains[1]["side"] and drains[1]["events_per_s"] > 0
    assert drains[2]["side"].endswith("with bronze and gold") and drains[2]["cpu_s_per_1k"] > 0
    lakehouse = [row for row in rows if row["side"].startswith("(e)") and row["side"].endswith("with bronze and gold")]
    assert len(lakehouse) == 1 and lakehouse[0]["samples"] > 0 and lakehouse[0]["caught_up"]
    assert all(drain["batches"] >= 1 and drain["median_batch_ms"] > 0 for drain in drains)
    assert all(0 < drain["from_first_read_s"] < drain["seconds"] for drain in drains)  # the job's start counted
    results = {row["side"][:3]: row for row in rows}
    assert set(results) == {"(a)", "(b)", "(c)", "(d)", "(e)", "(f)"}
    for side in ("(a)", "(b)", "(c)"):
        assert results[side]["events_per_s"] > 0 and results[side]["cpu_s_per_1k"] > 0
    assert results["(a)"]["cold_events_per_s"] > 0 and results["(a)"]["cold_seconds"] >= results["(a)"]["seconds"]
    # Telegraf's basicstats counted what json_v2 parsed: all but the malformed 1%, none dropped as ahead of its period
    assert 2800 <= results["(c)"]["aggregated_events"] <= 3000
    assert results["(c)"]["consumed_s"] + results["(c)"]["period_wait_s"] == pytest.approx(results["(c)"]["seconds"])
    assert results["(d)"]["points_per_s"] > 0
    assert results["(e)"]["samples"] > 0 and 0 < results["(e)"]["freshness_p50_s"] <= results["(e)"]["freshness_p99_s"]
    # an update became visible after the poll before the one that saw it: the middle of that interval is earlier
    assert results["(e)"]["freshness_p50_s"] < results["(e)"]["freshness_seen_p50_s"]
    assert results["(f)"]["sent"] == 15 * 300 and results["(f)"]["rss_end_mib"] > 0
    heap = results["(f)"]["live_heap_mib"]
    assert len(heap) >= 2 and all(0 < mib < results["(f)"]["rss_after_warmup_mib"] for mib in heap)
    table = (tmp_path / "table.md").read_text()
    assert "(c) Telegraf" in table and "vs (c) Telegraf" in table


@pytest.mark.slow
def test_the_parse_benchmark_times_each_variant():
    argv = [sys.executable, "-m", "benchmarks.parse", "--events", "2000", "--rounds", "2"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in run.stdout.splitlines() if line.startswith("| ")]
    assert [row[0].strip() for row in rows] == ["parse_events (typed first)", "parse_events, exact parse alone",
                                                "plain typed from_json"]
    assert all(float(row[2]) > 0 and len(row[1].split(" / ")) == 2 for row in rows)


@pytest.mark.stack  # starts a stack of its own
def test_the_per_batch_benchmark_puts_the_job_beside_spark_s_floor(tmp_path):
    argv = [sys.executable, "-m", "benchmarks.per_batch", "--queries", "job,f3", "--rate", "200", "--warmup-s", "20",
            "--span-s", "10", "--json", str(tmp_path / "rows.json")]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    job, floor = json.loads((tmp_path / "rows.json").read_text())
    assert (job["query"], floor["query"]) == ("job", "f3")
    for row in (job, floor):  # each read the live stream in batches that Spark ran as jobs
        assert row["batches"] > 0 and row["events"] > 0 and row["jobs_per_batch"] >= 1 and row["cpu_s"] > 0, row
    assert job["freshness_p95_ms"] is not None  # the job's own pipeline_writes
    assert f"| job | {job['cpu_s_per_batch']:.2f} | {job['cpu_s_per_batch'] / floor['cpu_s_per_batch']:.2f} |" in (
        run.stdout)
    threads = [line for line in run.stdout.splitlines() if line.startswith("| java: ")]
    assert threads and all(float(line.split("|")[2]) >= 0 for line in threads)


@pytest.mark.stack  # starts a stack of its own
def test_a_small_sizing_run_gives_the_curve(tmp_path):
    argv = [sys.executable, "-m", "benchmarks.sizing", "--rates", "300", "--many-devices", "0", "--backlog", "0",
            "--live-s", "5", "--warmup-s", "5", "--out", str(tmp_path)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    [live] = json.loads((tmp_path / "sizing.json").read_text())["live"]
    assert live["rate"] == 300 and live["caught_up"] and live["cores"] > 0 and live["live_cpu_s_per_1k"] > 0
    assert live["sender_kept_up"] and live["sent_per_s"] >= 0.97 * 300
    assert f"| 300 | {live['sent_per_s']:,.0f} | 100 | {live['cores']:.2f} |" in run.stdout


def test_the_sizing_curve_says_when_the_simulator_fell_behind():
    row = {"rate": 2000.0, "devices": 20_000, "cores": 1.5, "live_cpu_s_per_1k": 0.75, "freshness_p50_s": 1.0,
           "freshness_p95_s": 2.0, "caught_up": True}
    kept_up = sizing.curve_table([{**row, "sent_per_s": 1990.0, "sender_kept_up": True}])
    behind = sizing.curve_table([{**row, "sent_per_s": 520.0, "sender_kept_up": False}])
    assert "| 2,000 | 1,990 | 20,000 | 1.50 |" in kept_up
    assert "| 2,000 | 520 (the simulator fell behind) | 20,000 | 1.50 |" in behind


def test_the_sizing_drain_table_gives_each_side_s_ratios_to_the_ceiling_and_telegraf():
    sides = [{"side": "(a) Spark ceiling", "events_per_s": 40_000.0, "cpu_s_per_1k": 0.1, "seconds": 50.0},
             {"side": "(b) the job", "events_per_s": 10_000.0, "cpu_s_per_1k": 0.3, "seconds": 200.0},
             {"side": "(c) Telegraf", "events_per_s": 20_000.0, "cpu_s_per_1k": 0.02, "seconds": 100.0}]
    assert "| (b) the job | 10,000 | 0.25 | 0.50 | 0.300 | 200.0 |" in sizing.drain_table(sides).splitlines()


def test_the_scale_out_table_names_each_place_and_its_ratio_to_local_mode():
    row = {"cpu_s_per_1k": 0.1, "batches": 10, "median_batch_ms": 8000.0, "load": 2.0}
    lines = scale_out.table([{**row, "workers": 0, "events_per_s": 20_000.0},
                             {**row, "workers": 1, "events_per_s": 15_000.0},
                             {**row, "workers": 2, "events_per_s": 30_000.0}]).splitlines()
    assert lines[2:] == ["| local[2] | 20,000 | 1.00 | 0.100 | 10 | 8.0 | 2.0 |",
                         "| 1 worker | 15,000 | 0.75 | 0.100 | 10 | 8.0 | 2.0 |",
                         "| 2 workers | 30,000 | 1.50 | 0.100 | 10 | 8.0 | 2.0 |"]
    assert "| 1 worker | 15,000 | - |" in scale_out.table([{**row, "workers": 1, "events_per_s": 15_000.0}])
