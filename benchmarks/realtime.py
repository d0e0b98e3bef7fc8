"""Spark's real-time mode, prototyped beside the micro-batch trigger: the job's own parse, deduplication and windows
(`realtime_query.py`) under PySpark 4.3's real-time trigger and under the job's micro-batch trigger, one after the
other on the same simulated load (`--rate`, 100 devices), windows to a Kafka topic. After `--warmup-s`, for
`--live-s`: the CPU of the query's process per 1,000 events, and the freshness of each site's 10 s window (when an
update of it arrives on the output topic, against the newest event time it includes).

A prototype, not the job: the sink is Kafka (real-time mode takes no `foreachBatch`), `dropDuplicates` stands in for
`dropDuplicatesWithinWatermark`, and it runs PySpark 4.3.0 in a virtualenv of its own (`<cache>/pyspark-4.3.0`,
made from PyPI on first use) with the Kafka connector 4.2.0, the newest Maven Central has.

    python -m benchmarks.realtime [--rate 1000] [--warmup-s 60] [--live-s 60] [--buffer-wait-ms 10]
                                  [--modes realtime,microbatch]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer

from benchmarks.measure import ProcessTree, log, own_stack, percentiles
from streamdash_toolbox.kafka_client import client_config
from streamdash_toolbox.simulator import SimulatorSettings, send
from streamdash_toolbox.stack import create_topic, install
from streamdash_toolbox.testing import REPO

PYSPARK_VERSION = "4.3.0"
QUERY_START_S = 30  # the query has started (and waits for records) by then on a 2-core machine
CONNECTOR_VERSION = "4.2.0"  # Maven Central has no spark-sql-kafka-0-10_2.13 4.3.0 (checked 2026-12-05)


def pyspark_python() -> Path:
    """The Python of a virtualenv with PySpark 4.3.0 (and what `src/` imports), made on first use."""
    venv = install.cache_home() / f"pyspark-{PYSPARK_VERSION}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        log(f"installing PySpark {PYSPARK_VERSION} into {venv} (first run only)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"pyspark=={PYSPARK_VERSION}", "pydantic"],
                       check=True)
        (venv / ".complete").touch()
    return python


def run(bench, mode: str, rate: float, warmup_s: float, live_s: float, buffer_wait_ms: int) -> dict:
    topic, output = bench.new_topic(), f"windows-{mode}-{int(time.time())}"
    create_topic(bench.bootstrap, output, partitions=1)
    jars = ",".join(str(jar) for jar in install.spark_kafka_connector_jars(log, CONNECTOR_VERSION))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYSPARK_SUBMIT_ARGS": f"--jars {jars} pyspark-shell",
           "SPARK_LOCAL_IP": "127.0.0.1"}
    query_log = (bench.work / f"{mode}.log").open("w")
    query = subprocess.Popen([str(pyspark_python()), str(REPO / "benchmarks" / "realtime_query.py"), bench.bootstrap,
                              topic, output, str(bench.work / f"checkpoint-{mode}"), mode, str(buffer_wait_ms)],
                             stdout=query_log, stderr=subprocess.STDOUT, env=env)
    tree = ProcessTree(query.pid)
    # (when an update of a site's 10 s window arrived, its newest event ns, when the query wrote it: the record's
    # CreateTime, ms)
    arrivals: list[tuple[float, int, int]] = []
    stop = threading.Event()

    def consume() -> None:
        consumer = Consumer({"bootstrap.servers": bench.bootstrap, "group.id": output, "auto.offset.reset": "earliest",
                             "fetch.wait.max.ms": 10})
        consumer.subscribe([output])
        while not stop.is_set():
            for message in consumer.consume(1000, 0.05):
                row = json.loads(message.value()) if not message.error() else {}
                if row.get("level") == "site" and row.get("window") == "10s":
                    arrivals.append((time.time(), row["newest_event_ns"], message.timestamp()[1]))
        consumer.close()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    try:
        time.sleep(QUERY_START_S)
        settings = SimulatorSettings(devices=100, sites=10, rate=rate, duration_s=warmup_s + live_s, seed=11,
                                     late_within_rate=0, late_beyond_rate=0, out_of_order_rate=0, duplicate_rate=0,
                                     malformed_rate=0)
        warm: list[tuple[float, float]] = []
        threading.Timer(warmup_s, lambda: warm.append((time.time(), tree.cpu_s()))).start()
        summary = send(settings, client_config(bench.bootstrap), topic, None, progress=None)
        ended = time.time()
        time.sleep(5)  # the last updates
        cpu_s = tree.cpu_s() - warm[0][1]
    finally:
        stop.set()
        query.terminate()
        query.wait(60)
        tree.stop()
        consumer.join()
    live = [(arrived, newest_ns / 1e9, written_ms / 1e3) for arrived, newest_ns, written_ms in arrivals
            if newest_ns / 1e9 >= warm[0][0]]
    return {"mode": mode, "sent_per_s": summary["events_per_s"], "cores": cpu_s / (ended - warm[0][0]),
            "cpu_s_per_1k": cpu_s / (rate * (ended - warm[0][0])) * 1000, "updates": len(live),
            **percentiles("freshness", [arrived - newest for arrived, newest, _ in live]),
            **percentiles("written", [written - newest for _, newest, written in live])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--warmup-s", type=float, default=60)
    parser.add_argument("--live-s", type=float, default=60)
    parser.add_argument("--buffer-wait-ms", type=int, default=10)
    parser.add_argument("--modes", default="realtime,microbatch")
    args = parser.parse_args()
    results = []
    with own_stack() as bench:
        for mode in args.modes.split(","):
            log(f"{mode} at {args.rate:g} events/s")
            results.append(run(bench, mode, args.rate, args.warmup_s, args.live_s, args.buffer_wait_ms))
    print(f"\nload average at the end: {os.getloadavg()}\n\n{table(results)}")


def table(results: list[dict]) -> str:
    lines = ["| trigger | cores | CPU-s / 1k events | site window updates | freshness p50 / p95 / p99 s |",
             "|---|---|---|---|---|"]
    for row in results:
        lines.append(f"| {row['mode']} | {row['cores']:.2f} | {row['cpu_s_per_1k']:.3f} | {row['updates']:,} | "
                     f"{row['freshness_p50_s']} / {row['freshness_p95_s']} / {row['freshness_p99_s']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
