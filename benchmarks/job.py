"""(b) the job draining the topic, (e) its freshness live, (f) a soak: the job as spark-submit runs it."""

from __future__ import annotations

import json
import statistics
import threading
import time
import tomllib

from benchmarks.measure import (
    LAKEHOUSE,
    WINDOW_SIZES,
    Bench,
    ProcessTree,
    live_heap_mib,
    percentiles,
)
from streamdash_toolbox.kafka_client import client_config
from streamdash_toolbox.simulator import SimulatorSettings, send
from streamdash_toolbox.testing import REPO
from streamdash_toolbox.testing.pipeline import wait_for

SENDER_KEPT_UP = 0.97  # the share of the asked rate the simulator must reach for a live run to count
# The batches' size limit the job runs with (the local configuration's).
MAX_BATCH_RECORDS = tomllib.loads((REPO / "conf" / "local.toml").read_text())["source"]["max_offsets_per_trigger"]


def read_everything(bench: Bench, database: str, records: int) -> bool:
    """Whether the dashboards' query has read `records` records (its progress is written once a batch has ended)."""
    rows = bench.query('SELECT sum("input_rows") FROM pipeline_progress WHERE "stream" =~ /_aggregates$/', database)
    return bool(rows) and rows[0]["sum"] == records


def drain(bench: Bench, topic: str, records: int, window_sizes: list[str] = WINDOW_SIZES,
          lakehouse: bool = False, *overrides: str, master: str = "local[2]", executors: tuple[int, ...] = ()) -> dict:
    """(b) from `earliest` until the dashboards' query has read every record and written its last batch: its
    windows (the dashboards have caught up: what Telegraf's figure means too) and its dead letters; with
    `lakehouse`, the bronze and gold queries run beside it, and the time is still the dashboards'. Timed and its
    CPU counted from the process's start, as Telegraf's; `from_first_read_s` from when its first batch began.
    The batches are even: none is left with a few records.
    On a cluster (`master`), the CPU of the processes `executors` (the workers, whose children the executors are)
    counts too."""
    batches = -(-records // MAX_BATCH_RECORDS)
    per_batch = -(-records // batches) + 4  # Spark splits the limit over the 4 partitions by their backlog
    launched = time.monotonic()
    job, database, _ = bench.start_job(topic, "job", window_sizes, lakehouse,
                                       f"source.max_offsets_per_trigger={per_batch}", *overrides, master=master)
    try:
        trees = [ProcessTree(pid) for pid in (job.proc.pid, *executors)]
        before_s = sum(tree.cpu_s() for tree in trees[1:])  # the workers' own, before this job
        assert wait_for(lambda: read_everything(bench, database, records), 1800, every_s=0.25), "the job did not drain"
        done, done_ns = time.monotonic(), time.time_ns()
        seconds = done - launched
        for tree in trees:
            tree.stop()
        progress = bench.query("SELECT * FROM pipeline_progress", database)
        job.terminate()
    finally:
        job.cleanup()
    aggregates = [row for row in progress if row["stream"].endswith("_aggregates") and row["input_rows"]]
    first = min(aggregates, key=lambda row: row["batch_id"])  # plans and compiles the query: a one-off cost
    from_first_read_s = (done_ns - first["time"]) / 1e9  # `time`: when the batch began
    after_first_s = from_first_read_s - first["batch_duration_ms"] / 1000
    side = ("(b) the job, backlog drain" + ("" if window_sizes == WINDOW_SIZES else f", windows {window_sizes}")
            + (LAKEHOUSE if lakehouse else ""))
    return {"side": side, "events_per_s": records / seconds, "seconds": seconds,
            "from_first_read_s": from_first_read_s, "from_first_read_events_per_s": records / from_first_read_s,
            "after_first_batch_events_per_s": (records - first["input_rows"]) / after_first_s,
            "cpu_s_per_1k": (sum(tree.cpu_s() for tree in trees) - before_s) / records * 1000,
            "median_batch_ms": statistics.median(row["batch_duration_ms"] for row in aggregates),
            "batches": len(aggregates)}


def freshness(bench: Bench, rate: float, seconds: float, warmup_s: float, lakehouse: bool = False,
              devices: int = 100, overrides: tuple[str, ...] = ()) -> dict:
    """(e) how long after it was sent each event is visible in its site's 10 s window; the first `warmup_s`
    of sending are sent but not counted (the JVM is still JIT-compiling Spark's planner and the queries' code:
    its compiler threads take about half the JVM's CPU a minute in, an eighth after three). `cpu_s_per_1k` counts
    every event sent from the job's start; `live_cpu_s_per_1k` only the events sent after the warm-up, with the CPU
    spent from then until the job had read them all, and `cores` what that takes at this rate."""
    topic = bench.new_topic()
    job, database, folder = bench.start_job(topic, "live", WINDOW_SIZES, lakehouse, *overrides)
    # (when the poll before saw the data, when this one did, site, window start ns, count, whether it was the
    # site's newest window when seen)
    observations: list[tuple[float, float, str, int, int, bool]] = []
    since_ns = int(time.time()) * 1_000_000_000
    stop = threading.Event()

    def poll() -> None:
        last: dict[tuple[str, int], int] = {}
        polled_before = time.time()
        while not stop.wait(0.15):
            asked = time.time()
            rows = bench.query('SELECT last("count") AS n FROM telemetry_site WHERE "window" = \'10s\' '
                              f"AND time >= {since_ns} GROUP BY site, time(10s) fill(none)", database)
            polled = (asked + time.time()) / 2  # when InfluxDB ran the query, within a few ms
            newest = {}
            for row in rows:
                newest[row["site"]] = max(newest.get(row["site"], row["time"]), row["time"])
            for row in rows:
                key = (row["site"], row["time"])
                if row["n"] != last.get(key):
                    last[key] = row["n"]
                    observations.append((polled_before, polled, *key, row["n"],
                                         row["time"] == newest[row["site"]]))
            polled_before = polled

    try:
        job.wait_started()
        tree = ProcessTree(job.proc.pid)
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        manifest = folder / "manifest.jsonl"
        settings = SimulatorSettings(devices=devices, sites=10, rate=rate, duration_s=warmup_s + seconds, seed=11,
                                     late_within_rate=0, late_beyond_rate=0, out_of_order_rate=0,
                                     duplicate_rate=0, malformed_rate=0)
        sending_ns = time.time_ns()
        warm: list[tuple[float, float]] = []  # (when the warm-up ended, the job's CPU seconds then)
        threading.Timer(warmup_s, lambda: warm.append((time.monotonic(), tree.cpu_s()))).start()
        summary = send(settings, client_config(bench.bootstrap), topic, manifest, progress=None)
        live_sending_s = time.monotonic() - warm[0][0]
        # The last windows are seen when the job has written them, however far behind it is.
        caught_up = wait_for(lambda: read_everything(bench, database, summary["delivered"]), 600, every_s=0.25)
        live_cpu_s = tree.cpu_s() - warm[0][1]
        time.sleep(1)  # a last poll
        stop.set()
        poller.join()
        tree.stop()
        progress = bench.query("SELECT freshness_ms FROM pipeline_writes WHERE freshness_ms > -1 AND time >= "
                              f"{sending_ns + int(warmup_s * 1e9)}", database)
        job.terminate()
    finally:
        job.cleanup()
    sent: dict[tuple[str, int], list[int]] = {}
    events = [json.loads(line)["event"] for line in manifest.read_text().splitlines()]
    counted_from_ms = min(event["event_time_ms"] for event in events) + warmup_s * 1000
    for event in events:
        start_ns = event["event_time_ms"] // 10_000 * 10_000 * 1_000_000
        sent.setdefault((event["site"], start_ns), []).append(event["event_time_ms"])
    latencies, seen, any_window = [], [], []
    for polled_before, polled, site, start_ns, count, newest in observations:
        times = sorted(sent.get((site, start_ns), []))
        if 0 < count <= len(times) and times[count - 1] >= counted_from_ms:
            sent_at = times[count - 1] / 1000  # the newest event the window includes
            latency = (polled_before + polled) / 2 - sent_at
            any_window.append(latency)
            if newest:
                latencies.append(latency)
                seen.append(polled - sent_at)
    own = sorted(row["freshness_ms"] / 1000 for row in progress)
    rss = [mib for _, mib in tree.rss_samples]
    live_events = sum(1 for event in events if event["event_time_ms"] >= counted_from_ms)
    live_cpu_s_per_1k = live_cpu_s / max(live_events, 1) * 1000
    return {"side": f"(e) freshness at {rate:g}/s" + (f", {devices:,} devices" if devices != 100 else "")
            + (LAKEHOUSE if lakehouse else "") + "".join(f", {o}" for o in overrides), "samples": len(latencies),
            "caught_up": caught_up,
            **percentiles("freshness", latencies), **percentiles("freshness_seen", seen),
            **percentiles("freshness_any_window", any_window),
            **percentiles("job_metric", own),
            "peak_rss_mib": max(rss, default=0),
            "cpu_s_per_1k": tree.cpu_s() / (rate * (warmup_s + seconds)) * 1000,  # CPU covers every event sent
            "live_cpu_s_per_1k": live_cpu_s_per_1k, "cores": live_cpu_s / live_sending_s,
            # The simulator's own rate: below the asked one, the load generator (not the job) fell behind, and the
            # events' stamps (the schedule's times) make every window look late.
            "sent_per_s": summary["events_per_s"], "sender_kept_up": summary["events_per_s"] >= SENDER_KEPT_UP * rate}


def soak(bench: Bench, rate: float, seconds: float) -> dict:
    """(f) resident memory after warm-up versus at the end; the live heap (after a full GC) sampled through
    the soak, its growth taken between the lowest sample of each half (a sample taken mid-batch counts that
    batch's rows as live); state rows stay bounded by the watermark."""
    topic = bench.new_topic()
    warmup_s = min(120.0, seconds / 3)
    job, database, _ = bench.start_job(topic, "soak")
    try:
        job.wait_started()
        tree = ProcessTree(job.proc.pid)
        heap_mib: list[float] = []
        sent = threading.Event()

        def sample_heap() -> None:
            if not sent.wait(warmup_s):
                while True:
                    heap_mib.append(live_heap_mib(tree))
                    if sent.wait(max(10.0, (seconds - warmup_s) / 8)):
                        break

        sampler = threading.Thread(target=sample_heap)
        sampler.start()
        settings = SimulatorSettings(devices=100, sites=10, rate=rate, duration_s=seconds, seed=13,
                                     late_beyond_rate=0)
        try:
            summary = send(settings, client_config(bench.bootstrap), topic, None, progress=None)
        finally:
            sent.set()
            sampler.join()
        heap_mib.append(live_heap_mib(tree))
        tree.stop()
        state = bench.query('SELECT max("state_rows") FROM pipeline_progress WHERE stream =~ /_aggregates$/ '
                           "GROUP BY time(1m) fill(none)", database)
        job.terminate()
    finally:
        job.cleanup()
    warm = [mib for at, mib in tree.rss_samples if at - tree.rss_samples[0][0] > warmup_s]
    half = len(heap_mib) // 2
    return {"side": f"(f) soak {rate:g}/s for {seconds:g} s", "sent": summary["sent"],
            "rss_after_warmup_mib": warm[0] if warm else None, "rss_end_mib": warm[-1] if warm else None,
            "rss_growth": (warm[-1] / warm[0] - 1) if warm else None,
            "live_heap_mib": [round(mib) for mib in heap_mib],
            "live_heap_growth": min(heap_mib[half:]) / min(heap_mib[:half] or heap_mib) - 1,
            "state_rows_per_minute": [row["max"] for row in state]}
