"""What every side of the benchmark shares: the stack it runs on, the preloaded topic, the job's launch, and
the CPU, memory and percentiles it measures with."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streamdash import config, influxql
from streamdash.config import Contract
from streamdash_toolbox.kafka_client import client_config
from streamdash_toolbox.simulator import SimulatorSettings, send
from streamdash_toolbox.stack import Stack, create_topic
from streamdash_toolbox.stack.process import processes
from streamdash_toolbox.testing import FREE_PORTS
from streamdash_toolbox.testing.pipeline import Job, job_args

CONTRACT = Contract()  # the simulator's payload, which the benchmark sends
WINDOW_SIZES = config.default_of(config.Aggregation, "window_sizes")
INFLUX_BATCH_SIZE = config.default_of(config.InfluxDBSink, "batch_size")  # Telegraf writes batches as the job does
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
    """CPU seconds and resident memory of a process and its descendants, sampled at once and every half second."""

    def __init__(self, root_pid: int):
        self.root, self.cpu_ticks, self.rss_samples, self.done = root_pid, {}, [], threading.Event()
        self._sample()
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
            self._sample()

    def _sample(self) -> None:
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

    def start_job(self, topic: str, prefix: str, window_sizes: list[str] = WINDOW_SIZES,
                  lakehouse: bool = False, *overrides: str, master: str = "local[2]") -> tuple[Job, str, Path]:
        """The job with its defaults on `topic`, writing to a new database (and with `lakehouse`, to bronze and gold
        tables), and `overrides`; its log and state in its own folder; `master` as spark-submit takes it."""
        database = self.new_database(prefix)
        folder = self.work / f"{prefix}-{database}"
        folder.mkdir()
        tables = (f"lakehouse.bronze={folder / 'bronze'}", f"lakehouse.gold={folder / 'gold'}") if lakehouse else ()
        args = job_args(self.stack, topic, database, folder, *JOB_DEFAULTS,
                        f"aggregation.window_sizes={json.dumps(window_sizes)}", *tables, *overrides)
        return Job(args, self.stack.env(), folder / "job.log", master=master), database, folder

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


@contextmanager
def own_stack() -> Iterator[Bench]:
    """A stack of the benchmark's own on loopback, in a temporary folder, stopped on the way out."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp) / "stack", ports=FREE_PORTS, die_with_parent=True)
        stack.up()
        try:
            yield Bench(stack, Path(tmp))
        finally:
            stack.down()


LAKEHOUSE = ", with bronze and gold"  # in the name of a side that also wrote the Delta tables


def percentiles(name: str, values: list[float]) -> dict:
    ordered = sorted(values)
    pick = (lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)) if ordered else (lambda q: None)
    return {f"{name}_p50_s": pick(0.5), f"{name}_p95_s": pick(0.95), f"{name}_p99_s": pick(0.99)}
