"""(a) Spark's own ceiling on the same topic, and (d) InfluxDB's write ceiling for the job's points."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks.measure import (
    CONTRACT,
    EVENT_SCHEMA,
    Bench,
    ProcessTree,
)
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.points import aggregate_line
from streamdash_toolbox.stack import install


def spark(bench: Bench, topic: str, records: int) -> dict:
    """(a) in its own process: read + one from_json per record + 10 s window aggregate, best of two. The first run is
    also reported (`cold_*`): like the job's drain, it pays for planning, code generation and the JIT's warm-up."""
    jars = ",".join(str(jar) for jar in install.spark_kafka_connector_jars())
    code = f"""
import time
from pyspark.sql import SparkSession, functions as F
spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").config("spark.jars", {jars!r})
         .config("spark.sql.shuffle.partitions", "2")
         # each field read from the parse would otherwise become a parse of its own (OptimizeCsvJsonExprs)
         .config("spark.sql.optimizer.enableJsonExpressionOptimization", "false").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")


def windows():  # a new plan each time: running the same DataFrame twice would reuse its shuffle files
    raw = (spark.read.format("kafka").option("kafka.bootstrap.servers", {bench.bootstrap!r})
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
    errors = bench.work / "spark-ceiling.log"
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


def influxdb(bench: Bench, points: int = 50_000) -> dict:
    """(d) the job's device points, written as its executors write them."""
    database = bench.new_database("ceiling")
    writer = InfluxWriter(url=bench.url, org="streamdash", bucket=f"{database}/autogen", token=bench.token)
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
