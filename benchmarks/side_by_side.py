"""Side by side on one machine, in one run, on the same preloaded topic: Spark's own ceiling, the job, Telegraf and
InfluxDB's write ceiling; then live freshness at each rate, and a soak.

    python benchmarks/side_by_side.py [--events 200000] [--rates 1000,10000] [--live-s 60] [--warmup-s 120]
                                      [--soak-s 600] [--soak-rate 5000] [--third-window "5 minutes"]
                                      [--out benchmarks/out]

(a) ceiling   Spark batch (local[2]): Kafka read + `from_json` with the event schema + a 10 s window aggregate;
              the better of two runs in one process (the ratios use it), and the first (`cold_*`) beside it.
(b) job       the job (spark-submit, local[2], its default trigger and windows 10 s / 1 min) drains the topic
              from `earliest`: every record read, its windows written to InfluxDB (the dashboards have caught up)
              and its dead letters written.
(b) again     with a third window size (`--third-window`): what another size costs, on the same topic.
(c) telegraf  Telegraf `kafka_consumer` + `json_v2` + `basicstats` + `quantile` -> InfluxDB (another database),
              until its consumer group has committed the whole topic and the last aggregates have landed.
              Telegraf aggregates by arrival period, not event time: no watermark, no dedup, no dead letters.
(d) influxdb  bulk writes of the job's own device points (25 fields, batches of 5,000, gzip).
(e) freshness the simulator sends in real time (no late, duplicate or malformed events, so event time = send time);
              InfluxDB is polled every 150 ms for each site's newest 10 s window, and each increase of its count
              is timed against the send time of the newest event it includes. The increase became visible
              between the poll that saw it and the one before: `freshness` takes the middle of that interval
              (half a poll, ~85 ms, either way), `freshness_seen` the poll that saw it (an upper bound).
              `freshness_any_window` counts the closing window's last update too: the batch that opens a window
              also writes the previous one's last events, older than the batch's newest by up to the batch's
              span. Also the job's `freshness_ms`.
(f) soak      `--soak-rate` for `--soak-s`: resident memory of the job's processes; the driver JVM's live heap
              (in use right after a full GC, by `jcmd`) every eighth of the soak after the warm-up, its growth taken
              between the lowest sample of each half (a sample taken mid-batch counts the batch's rows as live);
              and its state rows over time.

CPU is the user+system time of each side's processes. Prints a table with ratios to (a) and (c), writes
results.json and a plot (benchmarks/out/side_by_side.png, with matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.pipeline import Job, job_args, processes, wait_for  # noqa: E402  (the same job launch as the e2e tests)

from streamdash import config, influxql  # noqa: E402
from streamdash.config import Contract  # noqa: E402
from streamdash.sinks.influxdb import InfluxWriter  # noqa: E402
from streamdash.sinks.points import aggregate_line  # noqa: E402
from streamdash_toolbox.kafka_client import client_config  # noqa: E402
from streamdash_toolbox.simulator import SimulatorSettings, send  # noqa: E402
from streamdash_toolbox.stack import Stack, create_topic, install  # noqa: E402

CONTRACT = Contract()  # the simulator's payload, which the benchmark sends
FREE = {"kafka": 0, "kafka_sasl": 0, "kafka_controller": 0, "influxdb": 0, "influxdb_rpc": 0}
WINDOW_SIZES = ["10 seconds", "1 minute"]
# The job as configured out of the box, where the tests' launcher (`job_args`) sets shorter intervals for speed.
JOB_DEFAULTS = ("aggregation.watermark=30 seconds",
                f"job.trigger_interval={config.Job.model_fields['trigger_interval'].default}")
EVENT_SCHEMA = ("schemaVersion long, deviceId string, site string, deviceType string, eventTime long, seq long, "
                "measurements struct<temperature double, humidity double, pressure double, battery double>")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class ProcessTree:
    """CPU seconds and resident memory of a process and its descendants, sampled every half second."""

    def __init__(self, root_pid: int):
        self.root, self.cpu_ticks, self.rss_samples, self.done = root_pid, {}, [], threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def members(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for pid, ppid, _ in processes():
            children.setdefault(ppid, []).append(pid)
        members, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            members.append(pid)
            todo.extend(children.get(pid, []))
        return members

    def _run(self) -> None:
        while not self.done.wait(0.5):
            rss_kib = 0
            for pid in self.members():
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    statm = Path(f"/proc/{pid}/statm").read_text().split()
                except OSError:
                    continue
                self.cpu_ticks[pid] = int(fields[11]) + int(fields[12])  # utime + stime
                rss_kib += int(statm[1]) * PAGE_KIB
            self.rss_samples.append((time.monotonic(), rss_kib / 1024))

    def cpu_s(self) -> float:
        return sum(self.cpu_ticks.values()) / CLK_TCK

    def stop(self) -> None:
        self.done.set()


def live_heap_mib(tree: ProcessTree) -> float:
    """The driver JVM's heap in use right after a full GC (`jcmd`): what the job keeps alive, without the garbage
    and the room G1 grows into, which resident memory also counts."""
    jvm = next(pid for pid in tree.members() if Path(f"/proc/{pid}/comm").read_text().strip() == "java")
    subprocess.run(["jcmd", str(jvm), "GC.run"], capture_output=True, timeout=120, check=True)
    info = subprocess.run(["jcmd", str(jvm), "GC.heap_info"], capture_output=True, text=True, timeout=60,
                          check=True).stdout
    return int(re.search(r"heap\s+total \d+K, used (\d+)K", info).group(1)) / 1024


class Bench:
    def __init__(self, stack: Stack, work: Path):
        self.stack, self.work = stack, work
        self.bootstrap = stack.info["kafka"]["bootstrap_servers"]
        self.url, self.token = stack.info["influxdb"]["url"], stack.secrets["influxdb_token"]

    def query(self, statement: str, database: str | None = None) -> list[dict]:
        return influxql.rows(influxql.query(self.url, statement, self.token, database))

    def new_database(self, prefix: str) -> str:
        database = f"{prefix}_{uuid.uuid4().hex[:8]}"
        influxql.query(self.url, f'CREATE DATABASE "{database}"', self.token)
        return database

    def start_job(self, topic: str, prefix: str, window_sizes: list[str] = WINDOW_SIZES) -> tuple[Job, str, Path]:
        """The job with its defaults on `topic`, writing to a new database; its log and state in its own folder."""
        database = self.new_database(prefix)
        folder = self.work / f"{prefix}-{database}"
        folder.mkdir()
        args = job_args(self.stack, topic, database, folder, *JOB_DEFAULTS,
                        f"aggregation.window_sizes={json.dumps(window_sizes)}")
        return Job(args, self.stack.env(), folder / "job.log"), database, folder

    def new_topic(self) -> str:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        create_topic(self.bootstrap, topic, partitions=4)
        return topic

    def preload(self, events: int) -> tuple[str, int]:
        """The topic (a)-(c) read. Its event times end a minute before it is written: Telegraf's aggregators drop
        a metric stamped after their current period, so a backlog from the future would be half dropped (and
        cheaper to consume) when Telegraf reads it soon after it was written."""
        topic = self.new_topic()
        duration_s = events / 2000
        settings = SimulatorSettings(devices=100, sites=10, rate=2000, duration_s=duration_s, seed=7,
                                     start_time_ms=int((time.time() - duration_s - 60) * 1000),
                                     realtime=False, late_within_rate=0.01, late_beyond_rate=0.01,
                                     out_of_order_rate=0.01, duplicate_rate=0.01, malformed_rate=0.01,
                                     epoch_millis_share=1.0)  # Telegraf's json_v2 takes one time format
        summary = send(settings, client_config(self.bootstrap), topic, None, progress=None)
        return topic, summary["sent"]

    def spark_ceiling(self, topic: str, records: int) -> dict:
        """(a) in its own process: read + from_json + 10 s window aggregate, best of two. The first run is also
        reported (`cold_*`): like the job's drain, it pays for planning, code generation and the JIT's warm-up."""
        jars = ",".join(str(jar) for jar in install.spark_kafka_connector_jars())
        code = f"""
import time
from pyspark.sql import SparkSession, functions as F
spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").config("spark.jars", {jars!r})
         .config("spark.sql.shuffle.partitions", "2").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")


def windows():  # a new plan each time: running the same DataFrame twice would reuse its shuffle files
    raw = (spark.read.format("kafka").option("kafka.bootstrap.servers", {self.bootstrap!r})
           .option("subscribe", {topic!r}).option("startingOffsets", "earliest")
           .option("endingOffsets", "latest").load())
    events = raw.select(F.from_json(F.col("value").cast("string"), {EVENT_SCHEMA!r}).alias("e")).select("e.*")
    return (events.withColumn("t", F.timestamp_millis("eventTime")).groupBy(F.window("t", "10 seconds"), "site")
            .agg(F.count(F.lit(1)).alias("n"), F.avg("measurements.temperature").alias("mean"))
            .select(F.sum("n"), F.sum("mean")))  # every window computed; nothing but two numbers collected


times = []
for _ in range(2):
    start = time.perf_counter()
    windows().collect()
    times.append(time.perf_counter() - start)
print("SECONDS", min(times), times[0])
"""
        errors = self.work / "spark-ceiling.log"
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=errors.open("w"),
                                text=True, env={**os.environ, "PYSPARK_PYTHON": sys.executable})
        tree = ProcessTree(proc.pid)
        out, _ = proc.communicate(timeout=1800)
        tree.stop()
        found = [line.split()[1:] for line in out.splitlines() if line.startswith("SECONDS")]
        assert found, f"the Spark ceiling run failed:\n{errors.read_text()[-3000:]}"
        seconds, cold_seconds = map(float, found[0])
        return {"side": "(a) Spark ceiling", "events_per_s": records / seconds, "seconds": seconds,
                "cold_events_per_s": records / cold_seconds, "cold_seconds": cold_seconds,
                "cpu_s_per_1k": tree.cpu_s() / 2 / records * 1000}  # two runs in that process

    def job_drain(self, topic: str, records: int, window_sizes: list[str] = WINDOW_SIZES) -> dict:
        """(b) from `earliest` until the job has read every record and written its last batch: its windows (the
        dashboards have caught up: what Telegraf's figure means too) and its dead letters."""
        job, database, _ = self.start_job(topic, "job", window_sizes)
        try:
            job.wait_started()
            tree = ProcessTree(job.proc.pid)
            started = time.monotonic()

            def read_everything() -> bool:
                rows = self.query('SELECT sum("input_rows") FROM pipeline_progress', database)
                return bool(rows) and rows[0]["sum"] == records

            assert wait_for(read_everything, 1800, every_s=0.25), "the job did not drain"
            seconds = time.monotonic() - started
            tree.stop()
            progress = self.query("SELECT * FROM pipeline_progress", database)
            job.terminate()
        finally:
            job.cleanup()
        aggregates = [row for row in progress if row["stream"].endswith("_aggregates") and row["input_rows"]]
        first = min(aggregates, key=lambda row: row["batch_id"])  # plans and compiles the query: a one-off cost
        after_first_s = seconds - first["batch_duration_ms"] / 1000
        side = "(b) the job, backlog drain" + ("" if window_sizes == WINDOW_SIZES else f", windows {window_sizes}")
        return {"side": side, "events_per_s": records / seconds, "seconds": seconds,
                "after_first_batch_events_per_s": (records - first["input_rows"]) / after_first_s,
                "cpu_s_per_1k": tree.cpu_s() / records * 1000,
                "median_batch_ms": statistics.median(row["batch_duration_ms"] for row in aggregates),
                "batches": len(aggregates)}

    def telegraf(self, topic: str, records: int) -> dict:
        """(c) until Telegraf's group has committed the topic's end and its aggregates stop changing."""
        from confluent_kafka import Consumer, TopicPartition

        database, group = self.new_database("telegraf"), f"telegraf-{uuid.uuid4().hex[:8]}"
        user, password = self.token.split(":", 1)
        config = self.work / f"{group}.conf"
        config.write_text(TELEGRAF_CONFIG.format(brokers=self.bootstrap, topic=topic, group=group, url=self.url,
                                                 database=database, user=user, password=password,
                                                 fields=TELEGRAF_FIELDS))
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False})
        partitions = [TopicPartition(topic, p) for p in range(4)]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in partitions}
        proc = subprocess.Popen([str(install.telegraf_binary()), "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=(self.work / f"{group}.log").open("w"))
        tree = ProcessTree(proc.pid)
        started = time.monotonic()

        def committed_everything() -> bool:
            offsets = consumer.committed(partitions, timeout=10)
            return all(p.offset >= ends[p.partition] for p in offsets)

        def landed() -> int:
            rows = self.query('SELECT sum("temperature_count") FROM telemetry', database)
            return int(rows[0]["sum"]) if rows else 0

        try:
            assert wait_for(committed_everything, 1800, every_s=0.25), "Telegraf did not consume the topic"
            final, final_at = landed(), time.monotonic()
            # Telegraf emits each 10 s period's aggregates when the period ends, and writes them at the next flush
            while final == 0 or time.monotonic() - final_at < 12:
                time.sleep(0.25)
                if landed() != final:
                    final, final_at = landed(), time.monotonic()
            seconds = final_at - started
        finally:
            tree.stop()
            proc.terminate()
            proc.wait(timeout=30)
            consumer.close()
        return {"side": "(c) Telegraf", "events_per_s": records / seconds, "seconds": seconds,
                "cpu_s_per_1k": tree.cpu_s() / records * 1000, "aggregated_events": final}

    def influx_ceiling(self, points: int = 50_000) -> dict:
        """(d) the job's device points, written as its executors write them."""
        database = self.new_database("ceiling")
        writer = InfluxWriter(url=self.url, org="streamdash", bucket=f"{database}/autogen", token=self.token)
        base_ns = 1_795_867_200_000_000_000
        rows = [{"level": "device", "site": f"site-{i % 10:02d}", "window": "10s", "device_id": f"dev-{i % 1000:04d}",
                 "device_type": "thermostat", "count": 10, "window_start_ns": base_ns + (i // 1000) * 10**10,
                 **{name: 20.0 + (i % 97) / 7 for name in CONTRACT.stat_columns()}} for i in range(points)]
        lines = [aggregate_line(CONTRACT, row) for row in rows]
        started = time.perf_counter()
        report = writer.write_lines(lines)
        seconds = time.perf_counter() - started
        assert report.written == points, report
        return {"side": "(d) InfluxDB bulk write", "points_per_s": points / seconds, "seconds": seconds,
                "fields_per_point": len(CONTRACT.stat_columns()) + 1}

    def freshness(self, rate: float, seconds: float, warmup_s: float) -> dict:
        """(e) how long after it was sent each event is visible in its site's 10 s window; the first `warmup_s`
        of sending are sent but not counted (the JVM is still JIT-compiling Spark's planner and the queries' code:
        its compiler threads take about half the JVM's CPU a minute in, an eighth after three)."""
        topic = self.new_topic()
        job, database, folder = self.start_job(topic, "live")
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
                rows = self.query('SELECT last("count") AS n FROM telemetry_site WHERE "window" = \'10s\' '
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
            settings = SimulatorSettings(devices=100, sites=10, rate=rate, duration_s=warmup_s + seconds, seed=11,
                                         late_within_rate=0, late_beyond_rate=0, out_of_order_rate=0,
                                         duplicate_rate=0, malformed_rate=0)
            send(settings, client_config(self.bootstrap), topic, manifest, progress=None)
            time.sleep(10)
            stop.set()
            poller.join()
            tree.stop()
            progress = self.query("SELECT freshness_ms FROM pipeline_progress WHERE freshness_ms > -1 AND time > "
                                  f"{int((time.time() - seconds - 10) * 1e9)}", database)
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
        return {"side": f"(e) freshness at {rate:g}/s", "samples": len(latencies),
                **percentiles("freshness", latencies), **percentiles("freshness_seen", seen),
                **percentiles("freshness_any_window", any_window),
                **percentiles("job_metric", own),
                "peak_rss_mib": max(rss, default=0),
                "cpu_s_per_1k": tree.cpu_s() / (rate * (warmup_s + seconds)) * 1000}  # CPU covers every event sent

    def soak(self, rate: float, seconds: float) -> dict:
        """(f) resident memory after warm-up versus at the end; the live heap (after a full GC) sampled through
        the soak, its growth taken between the lowest sample of each half (a sample taken mid-batch counts that
        batch's rows as live); state rows stay bounded by the watermark."""
        topic = self.new_topic()
        warmup_s = min(120.0, seconds / 3)
        job, database, _ = self.start_job(topic, "soak")
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
                summary = send(settings, client_config(self.bootstrap), topic, None, progress=None)
            finally:
                sent.set()
                sampler.join()
            heap_mib.append(live_heap_mib(tree))
            tree.stop()
            state = self.query('SELECT max("state_rows") FROM pipeline_progress WHERE stream =~ /_aggregates$/ '
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


def percentiles(name: str, values: list[float]) -> dict:
    ordered = sorted(values)
    pick = (lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)) if ordered else (lambda q: None)
    return {f"{name}_p50_s": pick(0.5), f"{name}_p95_s": pick(0.95), f"{name}_p99_s": pick(0.99)}


TELEGRAF_CONFIG = """
[agent]
  interval = "1s"
  flush_interval = "1s"
  metric_batch_size = 5000
  metric_buffer_limit = 1000000
  omit_hostname = true

[[inputs.kafka_consumer]]
  brokers = ["{brokers}"]
  topics = ["{topic}"]
  consumer_group = "{group}"
  offset = "oldest"
  kafka_version = "4.1.0"
  max_undelivered_messages = 10000
  data_format = "json_v2"
  [[inputs.kafka_consumer.json_v2]]
    measurement_name = "telemetry"
    timestamp_path = "eventTime"
    timestamp_format = "unix_ms"
    [[inputs.kafka_consumer.json_v2.tag]]
      path = "site"
    [[inputs.kafka_consumer.json_v2.tag]]
      path = "deviceId"
{fields}
[[aggregators.basicstats]]
  period = "10s"
  grace = "8760h"
  drop_original = true
  stats = ["count", "min", "max", "mean", "stdev"]

[[aggregators.quantile]]
  period = "10s"
  grace = "8760h"
  drop_original = true
  quantiles = [0.95]

[[outputs.influxdb]]
  urls = ["{url}"]
  database = "{database}"
  skip_database_creation = true
  username = "{user}"
  password = "{password}"
  content_encoding = "gzip"
"""


TELEGRAF_FIELDS = "".join(f"""    [[inputs.kafka_consumer.json_v2.field]]
      path = "{measurement.path.removeprefix('$.')}"
      rename = "{name}"
      type = "float"
""" for name, measurement in CONTRACT.measurements.items())


def print_table(results: list[dict]) -> str:
    ceiling = next((r["events_per_s"] for r in results if r["side"].startswith("(a)")), None)
    telegraf = next((r["events_per_s"] for r in results if r["side"].startswith("(c)")), None)
    lines = ["| side | events/s | vs (a) ceiling | vs (c) Telegraf | CPU s / 1k events | other |",
             "|---|---|---|---|---|---|"]
    for r in results:
        rate = r.get("events_per_s")
        other = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                          if k not in ("side", "events_per_s", "cpu_s_per_1k"))
        lines.append(f"| {r['side']} | {f'{rate:,.0f}' if rate else ''} | "
                     f"{f'{rate / ceiling:.2f}x' if rate and ceiling else ''} | "
                     f"{f'{rate / telegraf:.2f}x' if rate and telegraf else ''} | "
                     f"{r['cpu_s_per_1k']:.3f} | {other} |" if "cpu_s_per_1k" in r else
                     f"| {r['side']} | {f'{rate:,.0f}' if rate else ''} | | | | {other} |")
    table = "\n".join(lines)
    print(table, flush=True)
    return table


def plot(results: list[dict], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    drains = [r for r in results if "events_per_s" in r]
    fresh = [r for r in results if r.get("freshness_p50_s") is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.barh([r["side"] for r in drains], [r["events_per_s"] for r in drains])
    left.set_xlabel("events/s (same topic)")
    names = [r["side"].removeprefix("(e) freshness at ") for r in fresh]
    for offset, key in ((-0.2, "freshness_p50_s"), (0.0, "freshness_p95_s"), (0.2, "job_metric_p95_s")):
        right.bar([i + offset for i in range(len(fresh))], [r[key] or 0 for r in fresh], width=0.2, label=key)
    right.set_xticks(range(len(fresh)), names)
    right.set_ylabel("seconds from send to InfluxDB")
    right.legend()
    fig.tight_layout()
    fig.savefig(out / "side_by_side.png")
    print(f"plot: {out / 'side_by_side.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="records preloaded for (a)-(c)")
    parser.add_argument("--rates", default="1000,10000", help="events/s for (e); empty for none")
    parser.add_argument("--live-s", type=float, default=60)
    parser.add_argument("--warmup-s", type=float, default=120, help="sent before (e) counts (the JVM's JIT warm-up)")
    parser.add_argument("--soak-s", type=float, default=600, help="0 for no soak")
    parser.add_argument("--soak-rate", type=float, default=5000)
    parser.add_argument("--points", type=int, default=50_000, help="points written for (d)")
    parser.add_argument("--third-window", default="5 minutes",
                        help="after (c), drain again with this third window size (what another size costs); "
                             "empty for none")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    install.telegraf_binary(progress=log)
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp) / "stack", ports=FREE, die_with_parent=True)
        stack.up()
        try:
            bench = Bench(stack, Path(tmp))
            log(f"preloading {args.events:,} events")
            topic, records = bench.preload(args.events)
            for name, measure in (("Spark ceiling", bench.spark_ceiling), ("job drain", bench.job_drain),
                                  ("Telegraf", bench.telegraf)):
                log(f"{name} on {records:,} records")
                results.append(measure(topic, records))
            if args.third_window:
                log(f"job drain with a third window size, {args.third_window}")
                results.append(bench.job_drain(topic, records, [*WINDOW_SIZES, args.third_window]))
            log("InfluxDB bulk write")
            results.append(bench.influx_ceiling(args.points))
            for rate in (float(r) for r in args.rates.split(",") if r.strip()):
                log(f"freshness at {rate:g} events/s for {args.live_s:g} s")
                results.append(bench.freshness(rate, args.live_s, args.warmup_s))
            if args.soak_s:
                log(f"soak at {args.soak_rate:g} events/s for {args.soak_s:g} s")
                results.append(bench.soak(args.soak_rate, args.soak_s))
        finally:
            stack.down()
    print()
    table = print_table(results)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "table.md").write_text(table + "\n")
    plot(results, out)


if __name__ == "__main__":
    main()
