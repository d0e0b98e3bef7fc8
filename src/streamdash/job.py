"""The streaming job: source -> parse/validate -> windowed aggregates -> InfluxDB, plus dead letters.

One streaming query reads and validates each record once, aggregates every window size and level in one
stateful pass, and writes the windows and then the dead letters of each micro-batch. Its checkpoint
(`<job.checkpoint_location>/aggregates`) holds both, so a restart replays exactly what was not committed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from streamdash import lifetime
from streamdash.config import DeadLetterSink, Settings, load_settings
from streamdash.errors import StreamdashError
from streamdash.events import DEDUPLICATION_KEY
from streamdash.metrics import InfluxProgressListener
from streamdash.sinks import dead_letter
from streamdash.sinks.grafana_live import GrafanaLivePusher
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.lines import LineSink, write_rows
from streamdash.sinks.points import aggregate_line
from streamdash.sinks.report import BatchWrites, record_batch
from streamdash.sources import eventhubs_native, kafka
from streamdash.storage import file_system, hadoop_path, read_text, write_text
from streamdash.transforms.aggregate import deduplicate, state_layout, windowed_aggregates
from streamdash.transforms.parse import DEAD_LETTER, EVENT_TIME_ADJUSTED, parse_events, split_once

log = logging.getLogger("streamdash.job")

# HotSpot does not JIT-compile a method larger than this (bytes of bytecode; -XX:+DontCompileHugeMethods).
HOTSPOT_HUGE_METHOD_BYTES = 8000


def spark_session(settings: Settings, verbose: bool = False) -> SparkSession:
    """The active session (Databricks, notebooks, spark-submit) configured for this job."""
    spark = SparkSession.builder.appName(settings.job.name).getOrCreate()
    spark.sparkContext.setLogLevel("INFO" if verbose else "WARN")
    local = file_system(spark, settings.job.checkpoint_location).getUri().getScheme() == "file"
    for key, value in session_settings(settings, spark.sparkContext.defaultParallelism, local).items():
        spark.conf.set(key, value)
    return spark


def session_settings(settings: Settings, cores: int, local_checkpoint: bool = False) -> dict[str, str]:
    """What a low-latency stateful job needs from its session."""
    conf = {
        "spark.sql.session.timeZone": "UTC",
        # The validation predicate is a large expression; inferring constraints from it (again for every
        # micro-batch) exhausts the driver's heap within minutes, and nothing here needs it.
        "spark.sql.constraintPropagation.enabled": "false",
        # Whole-stage codegen turns the parse into one method of ~9,700 bytes of bytecode, and HotSpot never
        # compiles a method above 8,000: it would run interpreted for good. At this limit Spark runs such a stage
        # with its smaller per-operator methods instead, which the JIT compiles. A batch parse: 1.5-1.8x faster.
        "spark.sql.codegen.hugeMethodLimit": str(HOTSPOT_HUGE_METHOD_BYTES),
        "spark.sql.shuffle.partitions": str(settings.job.shuffle_partitions or cores),
        # RocksDB keeps state off the JVM heap; the changelog commits only what a batch changed.
        "spark.sql.streaming.stateStore.providerClass":
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        # Update mode emits a window as it changes, so a batch without data has nothing to add.
        "spark.sql.streaming.noDataMicroBatches.enabled": "false",
    }
    if local_checkpoint:
        # Without Hadoop's native library (PySpark's pip package has none), the FileContext API runs `readlink`
        # in a child process to rename each checkpoint file: several forks of the JVM per batch and state store. The
        # FileSystem API renames with one rename(2), atomic on a local disk.
        conf["spark.sql.streaming.checkpointFileManagerClass"] = (
            "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager")
    return conf


def read_source(spark: SparkSession, settings: Settings) -> DataFrame:
    """The configured source."""
    if settings.source.kind == "eventhubs_native":
        return eventhubs_native.read_stream(spark, settings.source)
    return kafka.read_stream(spark, settings.source)


def query_starters(spark: SparkSession, settings: Settings) -> dict[str, Callable[[], StreamingQuery]]:
    """One function per streaming query that starts it (again) from its checkpoint.

    One query: each trigger reads the topic and parses each record once (`split_once`); its output is every
    window size and level from one stateful aggregation, followed by the records that failed validation.
    """
    checkpoint = settings.job.checkpoint_location.rstrip("/")
    contract = settings.contract
    check_checkpoint(spark, checkpoint, state_layout(contract))
    writer = InfluxWriter.from_config(settings.influxdb)
    views = [GrafanaLivePusher.from_config(settings.grafana_live)] if settings.grafana_live else []
    parsed = parse_events(read_source(spark, settings), settings.validation, contract)
    if settings.validation.early_events == "adjust":  # counted in pipeline_progress as early_events_adjusted
        parsed = parsed.observe("early_events", F.count_if(F.col(EVENT_TIME_ADJUSTED)).alias("adjusted"))
    events, letters = split_once(parsed)
    aggregates = windowed_aggregates(deduplicate(events, settings.aggregation.watermark, contract.deduplicate),
                                     settings.aggregation.window_sizes, settings.aggregation.quantile_sketch_k,
                                     contract)
    output = aggregates.unionByName(letters.observe("dead_letters", F.count(F.lit(1)).alias("dead_letters")),
                                    allowMissingColumns=True)
    name = f"{settings.job.name}_aggregates"
    return {name: partial(
        output.writeStream.outputMode("update").queryName(name).option("checkpointLocation", f"{checkpoint}/aggregates")
        .trigger(processingTime=settings.job.trigger_interval)
        .foreachBatch(write_batch(writer, views, settings.dead_letter, name, f"{settings.job.name}_dead_letters",
                                  partial(aggregate_line, contract)))
        .start)}


STATE_LAYOUT_FILE = "state_layout.json"
_START_OVER = ("Set job.checkpoint_location to a new folder (the job then starts from source.starting_offsets), or "
               "delete {checkpoint} to start over")


def check_checkpoint(spark: SparkSession, checkpoint: str, layout: dict) -> None:
    """Refuse, in one line naming the checkpoint, a checkpoint this version cannot continue; record `layout` (see
    `transforms.aggregate.state_layout`) in a new one.

    Earlier layouts ran more queries: one per window size before 0.2 (`aggregates_<size>` folders), and the dead
    letters in their own query before 0.3 (`dead_letters`); their state and offsets cannot be carried into the
    single query (it would count some records twice, or never dead-letter those the old query had not reached).
    Up to 0.3 the deduplication state was keyed by (device_id, seq) alone, with no `STATE_LAYOUT_FILE`."""
    fs = file_system(spark, checkpoint)
    start_over = _START_OVER.format(checkpoint=checkpoint)
    found = [status for pattern in ("aggregates_*", "dead_letters")
             for status in fs.globStatus(hadoop_path(spark, f"{checkpoint}/{pattern}")) or []]
    if found:
        raise StreamdashError(
            f"{checkpoint} holds checkpoints of an earlier query layout ({found[0].getPath().getName()}); this "
            f"version reads, aggregates and dead-letters in one query and cannot continue from them. {start_over}")
    marker = f"{checkpoint}/{STATE_LAYOUT_FILE}"
    recorded_text = read_text(spark, marker)
    if recorded_text is not None:
        recorded = json.loads(recorded_text)
        changed = sorted(key for key in {*recorded, *layout} if recorded.get(key) != layout.get(key))
        if changed:
            raise StreamdashError(f"{checkpoint} holds aggregation state of another layout (it differs in "
                                  f"{', '.join(changed)}); this configuration cannot continue from it. {start_over}")
    elif fs.exists(hadoop_path(spark, f"{checkpoint}/aggregates")):
        raise StreamdashError(
            f"{checkpoint} holds the state of streamdash 0.3 or earlier, whose deduplication was keyed by "
            f"(device_id, seq) alone; this version keys it by ({', '.join(DEDUPLICATION_KEY)}). {start_over}")
    else:
        write_text(spark, marker, json.dumps(layout, sort_keys=True))


def write_batch(writer: InfluxWriter, views: list[LineSink], dead_letters: DeadLetterSink, stream: str,
                invalid_stream: str, to_line: Callable[[dict], str | None]) -> Callable[[DataFrame, int], None]:
    """The query's handler: windows to InfluxDB (the record), then to `views` (Grafana Live); then the points
    InfluxDB refused (as `stream`, the query's name) and the records that failed validation (as `invalid_stream`)
    to the dead letters. The batch is kept in memory while it is written, so its source is read and its state
    updated once."""

    def write(batch: DataFrame, batch_id: int) -> None:
        batch.persist()
        try:
            windows = batch.where(F.col(DEAD_LETTER).isNull())
            report, *_ = write_rows(windows, to_line, [writer, *views])
            windows_written_ns = time.time_ns()
            blocked_s = report.blocked_s
            if report.rejected:
                blocked_s += dead_letter.write_rejected(batch.sparkSession, report.rejected, dead_letters, writer,
                                                        stream, batch_id).blocked_s
            invalid = batch.where(F.col(DEAD_LETTER).isNotNull()).select(f"{DEAD_LETTER}.*")
            blocked_s += dead_letter.write_invalid(invalid, dead_letters, writer, invalid_stream, batch_id).blocked_s
        finally:
            batch.unpersist()
        record_batch(stream, batch_id, BatchWrites(windows_written_ns, round(blocked_s * 1000)))

    return write


_STREAMDASH_ERROR = re.compile(r"streamdash\.[\w.]+Error: (.+)")
# Spark's error classes: `[KLL_SKETCH_INVALID_INPUT] For function ...`, `[CAST_INVALID_INPUT.X] ...`.
_SPARK_ERROR = re.compile(r"(\[[A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*\] .+)")


def failure_summary(error: Exception) -> str:
    """One line: the message of a streamdash error raised in a task (what the user can act on, such as an
    InfluxDB outage past `influxdb.max_outage`), else the first of Spark's error classes with its message (an
    error inside `foreachBatch` arrives wrapped in py4j's "An exception was raised by the Python Proxy" and a
    Python traceback), else the first line."""
    text = str(error)
    match = _STREAMDASH_ERROR.search(text) or _SPARK_ERROR.search(text)
    return (match.group(1) if match else (text.strip().splitlines() or [""])[0])[:500]


def hit_kafka_metrics_bug(query: StreamingQuery) -> bool:
    """SPARK-55271 (Spark 4.1.x, 4.2.0): after a crash, the first batch re-run from the offset log commits, then
    the Kafka source's progress metrics throw a NullPointerException and stop the query. Its batch is already
    committed, so starting the query again is safe and continues exactly where it was."""
    error = query.exception()
    return error is not None and 'the return value of "scala.Option.get()" is null' in str(error)


def run(settings: Settings, verbose: bool = False) -> None:
    """Run until SIGTERM/SIGINT (then finish the batch in flight and stop) or until a query fails."""
    spark = spark_session(settings, verbose)
    listener = None
    if settings.job.self_metrics:
        listener = InfluxProgressListener(InfluxWriter.from_config(settings.influxdb))
        spark.streams.addListener(listener)
    starters = query_starters(spark, settings)
    queries = {name: start() for name, start in starters.items()}
    log.info("started %d queries: %s", len(queries), ", ".join(queries))
    stopping = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stopping.set())
    restarted: set[str] = set()
    try:
        while not stopping.is_set():
            try:
                if not spark.streams.awaitAnyTermination(1.0):
                    continue
            except StreamingQueryException:
                pass
            spark.streams.resetTerminated()
            ended = [name for name, query in queries.items() if not query.isActive]
            if not all(hit_kafka_metrics_bug(queries[name]) and name not in restarted for name in ended):
                break
            for name in ended:
                log.warning("query %s hit SPARK-55271 after recovery; starting it again from its checkpoint", name)
                restarted.add(name)
                queries[name] = starters[name]()
    finally:
        stop_gracefully(list(queries.values()))
        # Detached once it has heard every query end, while the gateway is still up: the JVM's listener bus
        # would otherwise call back into a Python process that is going away, and print a stack trace.
        if listener:
            listener.wait_terminated({str(q.id) for q in queries.values()}, timeout_s=30)
            spark.streams.removeListener(listener)
        finish_state_store_maintenance(spark)
    failed = [q for q in queries.values() if q.exception() is not None]
    if failed:
        raise StreamdashError(f"query {failed[0].name} failed: {failure_summary(failed[0].exception())}")
    log.info("stopped cleanly")


def stop_gracefully(queries: list[StreamingQuery], timeout_s: float = 60.0) -> None:
    """Let each query finish the micro-batch in flight (so its commit lands), then stop it."""
    deadline = time.monotonic() + timeout_s
    for query in queries:
        while query.isActive and query.status["isTriggerActive"] and time.monotonic() < deadline:
            time.sleep(0.2)
        query.stop()


def finish_state_store_maintenance(spark: SparkSession) -> None:
    """Wait for the state store's background work (RocksDB snapshot uploads) to finish, and start no more.

    Spark runs it on a timer even after the queries stop; if the JVM exits meanwhile, its shutdown hook deletes
    the local directory under an upload in flight, and a clean stop ends in stack traces. Only a local driver
    holds the stores (on a cluster they live in the executors). Databricks' runtime, its own build of Spark, is
    left alone: these calls are Spark's internals. Not `StateStore.stop()`, which Spark's tests use: it holds a
    lock that the work in flight may wait for. The pause keeps a timer tick from racing the shutdown.
    """
    if kafka.on_databricks() or not spark.sparkContext.master.startswith("local"):
        return
    state_store = getattr(getattr(spark._jvm.org.apache.spark.sql.execution.streaming.state, "StateStore$"), "MODULE$")
    state_store.setMaintenancePaused(True)
    try:
        state_store.stopMaintenanceTaskWithoutLock()  # the pool finishes what it runs; maintenance restarts on demand
    finally:
        state_store.setMaintenancePaused(False)


def parse_args(argv: list[str], default_conf_dir: Path) -> argparse.Namespace:
    """The job's command line: what spark-submit and the bundle's spark_python_task pass."""
    parser = argparse.ArgumentParser(prog="stream_to_influx", description=__doc__)
    parser.add_argument("--env", default="local", help="configuration: conf/<env>.toml")
    parser.add_argument("--conf-dir", default=str(default_conf_dir))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one configuration value (repeatable)")
    parser.add_argument("--verbose", action="store_true", help="Spark's and py4j's INFO logs too")
    return parser.parse_args(argv)


def main(argv: list[str], default_conf_dir: Path) -> None:
    if "PYSPARK_GATEWAY_PORT" in os.environ and not kafka.on_databricks():
        lifetime.die_with_parent(signal.SIGKILL)  # under spark-submit: the JVM is the parent; no orphan driver
    args = parse_args(argv, default_conf_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("py4j").setLevel(logging.WARNING)  # otherwise a line per call from the JVM
    try:
        settings = load_settings(args.env, args.conf_dir, args.overrides)
        run(settings, args.verbose)
    except StreamdashError as err:
        log.error("%s", err)
        sys.exit(1)
