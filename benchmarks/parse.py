"""The parse alone, in a warm batch: CPU per event of `parse_events` as the job runs it (typed first) and of its exact
VARIANT parse alone, beside a plain typed `from_json` of the same records, which cannot tell `7` from `"7"` (the
floor). The simulator's records with 1% each of late, out-of-order, duplicate and malformed ones, cached in memory;
each variant's rows written to Spark's `noop` sink, `--rounds` times, round-robin (the first round pays for code
generation and the JIT; the table's last column is the median of the others).

    python -m benchmarks.parse [--events 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from benchmarks.measure import CLK_TCK, EVENT_SCHEMA
from streamdash.config import load_settings
from streamdash.session import session_settings
from streamdash.transforms.parse import parse_events
from streamdash_toolbox.simulator import SimulatorSettings, TelemetryGenerator
from streamdash_toolbox.stack.process import processes
from streamdash_toolbox.testing import REPO
from streamdash_toolbox.testing.records import RAW_SCHEMA


def jvm_cpu_s() -> float:
    """CPU seconds of this process's children (the driver JVM)."""
    total = 0
    for pid, parent, _ in processes():
        if parent == os.getpid():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("INFLUXDB_TOKEN", "unused")  # the local configuration names it; the parse writes nothing
    settings = load_settings("local", REPO / "conf", [])
    builder = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false"))
    for key, value in session_settings(settings, 2).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    simulator = SimulatorSettings(devices=100, sites=10, rate=2000, duration_s=args.events / 2000, seed=7,
                                  start_time_ms=int(time.time() * 1000) - 60_000, realtime=False,
                                  late_within_rate=0.01, late_beyond_rate=0.01, out_of_order_rate=0.01,
                                  duplicate_rate=0.01, malformed_rate=0.01)
    appended = dt.datetime.now()
    rows = [(None, record.payload, "t", 0, offset, appended, 1, None)
            for offset, (_, record) in enumerate(TelemetryGenerator(simulator).records())]
    raw = spark.createDataFrame(rows, RAW_SCHEMA).repartition(2).cache()
    events = raw.count()
    variants = {
        "parse_events (typed first)": lambda: parse_events(raw, settings.validation, settings.contract),
        "parse_events, exact parse alone": lambda: parse_events(raw, settings.validation, settings.contract,
                                                                typed_first=False),
        "plain typed from_json": lambda: raw.select(
            F.from_json(F.col("value").cast("string"), EVENT_SCHEMA.replace("eventTime long", "eventTime string"))
            .alias("e")).select("e.*"),
    }
    print(f"{events:,} records; CPU microseconds per record by round (load {os.getloadavg()[0]:.2f})")
    spent: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):  # round-robin, so no variant has the JIT warmed up by the others alone
        for name, frame in variants.items():
            cpu = jvm_cpu_s()
            frame().write.format("noop").mode("overwrite").save()
            spent[name].append((jvm_cpu_s() - cpu) / events * 1e6)
    for name, rounds in spent.items():
        warm = sorted(rounds[1:])[len(rounds[1:]) // 2] if len(rounds) > 1 else rounds[0]
        print(f"| {name} | {' / '.join(f'{us:.1f}' for us in rounds)} | {warm:.1f} |")
    spark.stop()


if __name__ == "__main__":
    main()
