"""End-to-end benchmark: sustained events/s, freshness and driver memory of the real job on a local stack.

    python benchmarks/throughput.py [--backlog 60000] [--rates 100,400] [--duration 60] [--out benchmarks/out]

1. Backlog: the simulator preloads `--backlog` events; the job (spark-submit, local[2]) then drains the topic
   from `earliest`. Sustained throughput = events / (time from the first batch to the last event in InfluxDB).
2. Live: for each rate, the simulator sends in real time while the job runs with a 1-second trigger.
   Freshness = batch time - newest event time at batch start (`pipeline_progress.freshness_ms`) + that batch's
   duration, i.e. how old the newest event is when its window lands in InfluxDB.
Memory is the peak resident size of the driver JVM. Prints a table, writes results.json and, when matplotlib is
installed (`pip install matplotlib`), a plot.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streamdash import influxql  # noqa: E402
from streamdash.kafka_client import client_config  # noqa: E402
from streamdash.simulator import Category, SimulatorSettings, send  # noqa: E402
from streamdash.stack import Stack, create_topic  # noqa: E402
from tests.pipeline import Job, job_args  # noqa: E402  (the same job launch as the e2e tests)

FREE = {"kafka": 0, "kafka_sasl": 0, "kafka_controller": 0, "influxdb": 0, "influxdb_rpc": 0}


class PeakRss:
    """Samples the resident size of a process tree's JVM every half second."""

    def __init__(self, root_pid: int):
        self.root, self.peak_kib, self.done = root_pid, 0, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.done.wait(0.5):
            try:
                status = Path(f"/proc/{self.root}/status").read_text()
            except OSError:
                continue
            rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")), 0)
            self.peak_kib = max(self.peak_kib, rss)

    def stop(self) -> float:
        self.done.set()
        return self.peak_kib / 1024


def site_total(stack_info: dict, token: str, database: str) -> int:
    statement = 'SELECT sum("count") FROM telemetry_site WHERE "window" = \'5s\''
    found = influxql.rows(influxql.query(stack_info["influxdb"]["url"], statement, token, database))
    return int(found[0]["sum"]) if found else 0


def progress_rows(stack_info: dict, token: str, database: str) -> list[dict]:
    url = stack_info["influxdb"]["url"]
    return influxql.rows(influxql.query(url, "SELECT * FROM pipeline_progress", token, database))


def run_scenario(stack: Stack, work: Path, name: str, settings: SimulatorSettings, preload: bool) -> dict:
    info, token = stack.info, stack.secrets["influxdb_token"]
    topic, database = f"bench-{uuid.uuid4().hex[:8]}", f"bench_{uuid.uuid4().hex[:8]}"
    create_topic(info["kafka"]["bootstrap_servers"], topic, partitions=4)
    influxql.query(info["influxdb"]["url"], f'CREATE DATABASE "{database}"', token)
    producer = client_config(info["kafka"]["bootstrap_servers"])
    folder = work / name
    folder.mkdir()
    summary = send(settings, producer, topic, None, progress=None) if preload else None
    job = Job(job_args(stack, topic, database, folder), stack.env(), folder / "job.log")
    try:
        job.wait_started()
        memory = PeakRss(job.proc.pid)
        started = time.monotonic()
        if not preload:
            summary = send(settings, producer, topic, None, progress=None)
        expected = sum(summary["by_category"].get(category, 0) for category in Category.COUNTED)
        deadline = time.monotonic() + 900
        while site_total(info, token, database) < expected and time.monotonic() < deadline:
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        peak_mib = memory.stop()
        job.terminate()
    finally:
        job.cleanup()
    rows = [r for r in progress_rows(info, token, database) if r["stream"].endswith("_aggregates_5s")]
    live = [r for r in rows if r.get("input_rows")]
    fresh = sorted(r["freshness_ms"] + r["batch_duration_ms"] for r in live if r.get("freshness_ms") is not None)
    return {
        "scenario": name, "events": summary["sent"], "offered_rate": None if preload else settings.rate,
        "elapsed_s": round(elapsed, 1), "end_to_end_events_per_s": round(summary["sent"] / elapsed, 1),
        "max_processed_rows_per_s": round(max((r["processed_rows_per_s"] for r in live), default=0), 1),
        "median_batch_ms": statistics.median(r["batch_duration_ms"] for r in live) if live else None,
        "freshness_p50_ms": fresh[len(fresh) // 2] if fresh else None,
        "freshness_p95_ms": fresh[int(0.95 * (len(fresh) - 1))] if fresh else None,
        "driver_peak_rss_mib": round(peak_mib),
    }


def print_table(results: list[dict]) -> None:
    columns = list(results[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in results)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in results:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


def plot(results: list[dict], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = [r["scenario"] for r in results]
    left.bar(names, [r["end_to_end_events_per_s"] for r in results])
    left.set_ylabel("events/s end to end")
    right.bar(names, [r["freshness_p50_ms"] or 0 for r in results], label="p50")
    right.bar(names, [(r["freshness_p95_ms"] or 0) - (r["freshness_p50_ms"] or 0) for r in results],
              bottom=[r["freshness_p50_ms"] or 0 for r in results], label="p95")
    right.set_ylabel("freshness (ms)")
    right.legend()
    fig.tight_layout()
    fig.savefig(out / "throughput.png")
    print(f"plot: {out / 'throughput.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=60000)
    parser.add_argument("--rates", default="100,400")
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stack = Stack(work / "stack", ports=FREE, die_with_parent=True)
        stack.up()
        try:
            base = dict(devices=50, sites=5, seed=3, late_beyond_rate=0.0, watermark_s=10, max_window_s=20)
            results = [run_scenario(stack, work, "backlog", SimulatorSettings(
                rate=args.backlog, duration_s=1, realtime=False, **base), preload=True)]
            print_table(results)
            for rate in (float(r) for r in args.rates.split(",")):
                results.append(run_scenario(stack, work, f"live-{rate:g}-per-s", SimulatorSettings(
                    rate=rate, duration_s=args.duration, **base), preload=False))
                print_table(results[-1:])
        finally:
            stack.down()
    print()
    print_table(results)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, out)


if __name__ == "__main__":
    main()
