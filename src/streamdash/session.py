"""The Spark session this job needs, and the Spark behaviours it works around, each with its reason.

- `spark.sql.codegen.hugeMethodLimit` = 8,000: whole-stage codegen makes the parse one method that HotSpot never
  JIT-compiles (HotSpot's `DontCompileHugeMethods`).
- `spark.sql.constraintPropagation.enabled` = false: inferring constraints from the validation predicate exhausts
  the driver's heap (Catalyst's `InferFiltersFromConstraints`).
- `spark.sql.codegen.cache.maxEntries` = 1,000: with the lakehouse tables a batch uses more generated classes than
  Spark keeps (100), so each was evicted before its next use and compiled again every batch.
- Spark's FileSystem checkpoint manager on a local disk: without Hadoop's native library, FileContext forks
  `readlink` for every rename.
- `hit_kafka_metrics_bug`: a recovered query can stop on a NullPointerException in the Kafka source's progress
  metrics (SPARK-55271).
- `finish_state_store_maintenance`: a RocksDB snapshot upload in flight when the JVM exits ends a clean stop in
  stack traces (Spark's `StateStore` maintenance timer).
- `failure_summary`: an error in `foreachBatch` arrives wrapped in py4j's text and a Python traceback.
"""

from __future__ import annotations

import re
from importlib import resources

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from streamdash.config import Settings
from streamdash.errors import StreamdashError
from streamdash.sources import kafka
from streamdash.storage import file_system

# HotSpot does not JIT-compile a method larger than this (bytes of bytecode; -XX:+DontCompileHugeMethods).
HOTSPOT_HUGE_METHOD_BYTES = 8000


# Settings only a new session takes: the job's under spark-submit; on Databricks, the stream's job cluster
# (`spark_conf` in resources/, which tests/test_bundle.py keeps equal to these). A batch with the bronze and gold
# tables uses ~75 generated classes again and again, and new ones besides: in Spark's cache of 100 each was evicted
# before its next use, so every batch compiled ~26 classes anew; with room for 1,000, 4.4x fewer in the first minute.
# The fair scheduler gives the cores to the queries' pools (`pipeline.SCHEDULER_POOLS`) as tasks end, where Spark's
# default runs jobs in the order they came: a dashboards' batch waited behind a gold batch's every task.
STATIC_SETTINGS = {"spark.sql.codegen.cache.maxEntries": "1000", "spark.scheduler.mode": "FAIR"}
# The pools' shares (`scheduler_pools.xml`: the dashboards' first). A file on the driver's disk: under spark-submit
# the job sets it; on Databricks pools not in a file share the cores equally.
SCHEDULER_POOLS_FILE = str(resources.files("streamdash").joinpath("scheduler_pools.xml"))

# What the parse needs from any session it runs in (the job's, a notebook's, a backfill's): a key repeated in a
# nested object is read as its last value, as the parse's typed path and the top level read it, where Spark's
# VARIANT parse would call the record malformed.
PARSE_SETTINGS = {"spark.sql.variant.allowDuplicateKeys": "true"}


def configure_parse(spark: SparkSession) -> None:
    """`PARSE_SETTINGS` on a session the job did not make (a notebook's, a backfill's)."""
    for key, value in PARSE_SETTINGS.items():
        spark.conf.set(key, value)


def spark_session(settings: Settings, verbose: bool = False) -> SparkSession:
    """The active session (Databricks, notebooks, spark-submit) configured for this job."""
    spark = (SparkSession.builder.appName(settings.job.name).config(map=STATIC_SETTINGS)
             .config("spark.scheduler.allocation.file", SCHEDULER_POOLS_FILE).getOrCreate())
    spark.sparkContext.setLogLevel("INFO" if verbose else "WARN")
    local = file_system(spark, settings.job.checkpoint_location).getUri().getScheme() == "file"
    for key, value in session_settings(settings, spark.sparkContext.defaultParallelism, local).items():
        spark.conf.set(key, value)
    return spark


DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"


def check_delta(spark: SparkSession, settings: Settings) -> None:
    """Refuse at start a session that cannot write the Delta tables the configuration names (a spark-submit without
    Delta's settings), instead of failing at the first write, minutes in. Databricks' runtime has Delta built in."""
    tables = [name for name, table in (("lakehouse.bronze", settings.lakehouse.bronze),
                                       ("lakehouse.gold", settings.lakehouse.gold)) if table]
    tables += ["dead_letter.format = \"delta\""] if settings.dead_letter.format == "delta" else []
    if tables and not kafka.on_databricks() and DELTA_EXTENSION not in spark.conf.get("spark.sql.extensions", ""):
        raise StreamdashError(
            f"{', '.join(tables)}: this Spark session cannot write Delta tables; run the job with `streamdash job`, "
            f"or give spark-submit Delta's jars and --conf spark.sql.extensions={DELTA_EXTENSION} --conf "
            "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog")


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
        **PARSE_SETTINGS,
        "spark.sql.shuffle.partitions": str(settings.job.shuffle_partitions or cores),
        # RocksDB keeps state off the JVM heap; the changelog commits only what a batch changed.
        "spark.sql.streaming.stateStore.providerClass":
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        # Update mode emits a window as it changes, so a batch without data has nothing to add.
        "spark.sql.streaming.noDataMicroBatches.enabled": "false",
        # Delta rebuilds a table's snapshot in 50 tasks by default, before each append or merge of a batch's few
        # rows: a bronze append and a gold merge took 2.5x as long as with a task per core.
        "spark.databricks.delta.snapshotPartitions": str(cores),
    }
    if local_checkpoint:
        # Without Hadoop's native library (PySpark's pip package has none), the FileContext API runs `readlink`
        # in a child process to rename each checkpoint file: several forks of the JVM per batch and state store. The
        # FileSystem API renames with one rename(2), atomic on a local disk.
        conf["spark.sql.streaming.checkpointFileManagerClass"] = (
            "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager")
    return conf


_STREAMDASH_ERROR = re.compile(r"streamdash\.[\w.]+Error: (.+)")
# Spark's error classes: `[KLL_SKETCH_INVALID_INPUT] For function ...`, `[CAST_INVALID_INPUT.X] ...`.
_SPARK_ERROR = re.compile(r"(\[[A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*\] .+)")
# The exception a Python traceback ends in (its frames are indented); the first in the text is the chain's root.
_PYTHON_ERROR = re.compile(r"Traceback \(most recent call last\):\n(?:[ \t].*\n)*([A-Za-z_][\w.]*): (.+)")
# A task's failure as Spark reports it: `... most recent failure: Lost task 2.0 in stage 0.0 (...): java.X: msg`.
_TASK_ERROR = re.compile(r"most recent failure: Lost task [^\n]*?\): ([\w.$]+: [^\n]+)")


def failure_summary(error: Exception) -> str:
    """One line that names the cause: the message of a streamdash error raised in a task (what the user can act
    on, such as an InfluxDB outage past `influxdb.max_outage`); else the exception at the root of a Python
    traceback (an error inside `foreachBatch` arrives wrapped in py4j's "An exception was raised by the Python
    Proxy": a full disk is `OSError: [Errno 28] No space left on device`), or its Spark error class and message
    when it is Spark's; else the exception that failed a task (`java.lang.ArithmeticException: long overflow`);
    else the first of Spark's error classes with its message; else the first line."""
    text = str(error)
    if match := _STREAMDASH_ERROR.search(text):
        return match.group(1)[:500]
    if match := _PYTHON_ERROR.search(text):
        kind, message = match.groups()
        return (message if _SPARK_ERROR.match(message) else f"{kind.rsplit('.', 1)[-1]}: {message}")[:500]
    match = _TASK_ERROR.search(text) or _SPARK_ERROR.search(text)
    return (match.group(1) if match else (text.strip().splitlines() or [""])[0])[:500]


def hit_kafka_metrics_bug(query: StreamingQuery) -> bool:
    """SPARK-55271 (Spark 4.1.x, 4.2.0): after a crash, the first batch re-run from the offset log commits, then
    the Kafka source's progress metrics throw a NullPointerException and stop the query. Its batch is already
    committed, so starting the query again is safe and continues exactly where it was."""
    error = query.exception()
    return error is not None and 'the return value of "scala.Option.get()" is null' in str(error)


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
