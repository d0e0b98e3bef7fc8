"""The pipeline, composed: up to three streaming queries in one application (`QUERIES`), each with its own trigger
and its own checkpoint under `job.checkpoint_location`, so the Delta tables never hold up the dashboards:

- **dashboards** (`<job>_aggregates`): source -> parse -> split -> deduplicate -> aggregate -> InfluxDB (and Grafana
  Live), with the dead letters. Each trigger reads the topic and parses each record once; the windows and the dead
  letters leave as one output (`transforms.batch`), which the handler (`sinks.micro_batch`) writes;
- **bronze** (`<job>_bronze`, with `lakehouse.bronze`): every record as read, appended by Delta's streaming sink;
- **gold** (`<job>_gold`, with `lakehouse.gold`): bronze read as a Delta stream, through the same parse,
  deduplication and aggregation with `lakehouse.gold_lateness`, each window merged into gold (`sinks.delta`).

A checkpoint holds its query's offsets and state, so a restart replays exactly what was not committed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, partial

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from streamdash.checkpoint import (
    batch_time_ms,
    batch_watermark_ms,
    check_checkpoint,
    committed_source_offsets,
    gold_counted_until_ms,
    query_id,
)
from streamdash.columns import EVENT_TIME_ADJUSTED, READ_AT
from streamdash.config import Settings, duration_seconds
from streamdash.limits import LiveLimits
from streamdash.metrics import metrics_writer
from streamdash.sinks import delta
from streamdash.sinks.dead_letter import DeadLetters
from streamdash.sinks.grafana_live import GrafanaLivePusher
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.lines import LineSinks
from streamdash.sinks.micro_batch import MicroBatchWriter
from streamdash.sinks.points import aggregate_line
from streamdash.sources import eventhubs_native, kafka
from streamdash.sources.unreadable import UnreadableRecords
from streamdash.transforms.aggregate import deduplicate, state_layout, windowed_aggregates
from streamdash.transforms.batch import query_output, split_once
from streamdash.transforms.parse import parse_events, reference_time, valid_events

# Each query: its checkpoint folder under job.checkpoint_location, which also names it (`<job.name>_<folder>`).
QUERIES = {"dashboards": "aggregates", "bronze": "bronze", "gold": "gold"}
# Each query's fair-scheduler pool (`session.STATIC_SETTINGS`): the tables share the cores with the dashboards, and
# never take them all.
SCHEDULER_POOLS = {"dashboards": "dashboards", "bronze": "lakehouse", "gold": "lakehouse"}


def read_source(spark: SparkSession, settings: Settings, headers: bool = False) -> DataFrame:
    """The configured source, as `columns.RAW_COLUMNS`, with the records' headers where the contract reads one or
    `headers` asks for them."""
    if settings.source.kind == "eventhubs_native":
        return eventhubs_native.read_stream(spark, settings.source)
    return kafka.read_stream(spark, settings.source, headers or settings.contract.reads_headers())


def selected_queries(settings: Settings) -> list[str]:
    """`job.queries`, or the dashboards' and one for each configured Delta table."""
    lakehouse = settings.lakehouse
    return settings.job.queries or ["dashboards", *(["bronze"] * bool(lakehouse.bronze)),
                                    *(["gold"] * bool(lakehouse.gold))]


def checkpoint_of(settings: Settings, query: str) -> str:
    return f"{settings.job.checkpoint_location.rstrip('/')}/{QUERIES[query]}"


def query_checkpoints(settings: Settings) -> dict[str, str]:
    """Each selected streaming query's name and checkpoint."""
    return {f"{settings.job.name}_{QUERIES[query]}": checkpoint_of(settings, query)
            for query in selected_queries(settings)}


def unreadable_records(spark: SparkSession, settings: Settings) -> dict[str, UnreadableRecords]:
    """Each selected query that reads Kafka, by name, with its way past a record Spark's source cannot read; the
    dashboards' query dead-letters such a record."""
    if settings.source.kind != "kafka":
        return {}
    influxdb = InfluxWriter.from_config(settings.influxdb)
    return {name: UnreadableRecords(spark, settings.source, settings.dead_letter if query == "dashboards" else None,
                                    influxdb, f"{settings.job.name}_unreadable")
            for query, name in zip(selected_queries(settings), query_checkpoints(settings), strict=True)
            if query in ("dashboards", "bronze")}


def query_starters(spark: SparkSession, settings: Settings) -> dict[str, Callable[[], StreamingQuery]]:
    """One function per selected streaming query that starts it, again after a failure, from its checkpoint."""
    check_checkpoint(spark, settings.job.checkpoint_location.rstrip("/"), state_layout(settings.contract))
    build = {"dashboards": dashboards_starter, "bronze": bronze_starter, "gold": gold_starter}
    return {name: partial(_in_pool, spark, SCHEDULER_POOLS[query], build[query](spark, settings, name))
            for query, name in zip(selected_queries(settings), query_checkpoints(settings), strict=True)}


def _in_pool(spark: SparkSession, pool: str, start: Callable[[], StreamingQuery]) -> StreamingQuery:
    """`start()` with its query's jobs in `pool`: the query's thread inherits the property from the one starting it."""
    spark.sparkContext.setLocalProperty("spark.scheduler.pool", pool)
    try:
        return start()
    finally:
        spark.sparkContext.setLocalProperty("spark.scheduler.pool", None)


def dashboards_starter(spark: SparkSession, settings: Settings, name: str) -> Callable[[], StreamingQuery]:
    contract = settings.contract
    parsed = parse_events(read_source(spark, settings), settings.validation, contract)
    if settings.validation.early_events == "adjust":  # counted in pipeline_progress as early_events_adjusted
        parsed = parsed.observe("early_events", F.count_if(F.col(EVENT_TIME_ADJUSTED)).alias("adjusted"))
    key = contract.deduplication_key()
    events, letters = split_once(parsed, settings.aggregation.watermark, key)
    unique = deduplicate(events, settings.aggregation.watermark, key)
    windows = windowed_aggregates(unique, settings.aggregation.window_sizes, settings.aggregation.quantile_sketch_k,
                                  contract)
    return partial(query_output(windows, letters).writeStream.outputMode("update").queryName(name)
                   .option("checkpointLocation", checkpoint_of(settings, "dashboards"))
                   .trigger(processingTime=settings.job.trigger_interval)
                   .foreachBatch(batch_handler(spark, settings, name)).start)


def bronze_starter(spark: SparkSession, settings: Settings, name: str) -> Callable[[], StreamingQuery]:
    """Bronze appends what the source reads. A new bronze checkpoint beside the dashboards' starts where that
    query had committed (a table turned on for a running deployment, an upgrade from one query writing both): it
    reads on from there, nothing twice and nothing skipped; else from `source.starting_offsets`."""
    table, checkpoint = settings.lakehouse.bronze, checkpoint_of(settings, "bronze")
    source = settings.source
    dashboards_at = committed_source_offsets(spark, checkpoint_of(settings, "dashboards"))
    if source.kind == "kafka" and dashboards_at and committed_source_offsets(spark, checkpoint) is None:
        source = source.model_copy(update={"starting_offsets": dashboards_at})
    records = delta.bronze_records(read_source(spark, settings.model_copy(update={"source": source}), headers=True))
    delta.create_bronze(spark, table)
    writer = (records.writeStream.format("delta").outputMode("append").queryName(name)
              .partitionBy(delta.BRONZE_PARTITION).option("checkpointLocation", checkpoint)
              .option("mergeSchema", "true")  # a table written before bronze kept the headers gains the column
              .trigger(processingTime=settings.lakehouse.trigger_interval))
    return partial(writer.start, table) if delta.is_path(table) else partial(writer.toTable, table)


def gold_windows(settings: Settings, records: DataFrame) -> DataFrame:
    """The windows of bronze's `records` (a stream), as the dashboards compute them but with gold's lateness."""
    parsed = parse_events(records, settings.validation, settings.contract, reference_time(F.col(READ_AT)))
    events = deduplicate(valid_events(parsed), settings.lakehouse.gold_lateness,
                         settings.contract.deduplication_key())
    aggregation = settings.aggregation
    return windowed_aggregates(events, aggregation.window_sizes, aggregation.quantile_sketch_k, settings.contract)


def gold_starter(spark: SparkSession, settings: Settings, name: str) -> Callable[[], StreamingQuery]:
    """Gold merges each batch's windows, and counts those the dashboards had closed: their watermark lags the
    same newest event time by `aggregation.watermark` where gold's lags it by `lakehouse.gold_lateness`. Gold
    rebuilt after a contract change counts only past where the gold before it had."""
    lakehouse, aggregation = settings.lakehouse, settings.aggregation
    delta.create_bronze(spark, lakehouse.bronze)  # when gold runs in a job without bronze's query
    windows = gold_windows(settings, delta.read_stream(spark, lakehouse.bronze))
    checkpoint = checkpoint_of(settings, "gold")
    ahead_ms = int((duration_seconds(lakehouse.gold_lateness) - duration_seconds(aggregation.watermark)) * 1000)
    counted_until_ms = gold_counted_until_ms(spark, checkpoint)  # by gold before a contract change (`carry_over`)

    def dashboards_watermark_ms(batch_id: int) -> int | None:
        gold_ms = batch_watermark_ms(spark, checkpoint, batch_id)
        return gold_ms + ahead_ms if gold_ms and gold_ms >= counted_until_ms else None

    handler = delta.GoldBatches(
        delta.GoldTable(lakehouse.gold), name,
        aggregation.window_sizes,
        dashboards_watermark_ms,
        metrics_writer(InfluxWriter.from_config(settings.influxdb)) if settings.job.self_metrics else None)
    return partial(windows.writeStream.outputMode("update").queryName(name)
                   .option("checkpointLocation", checkpoint).trigger(processingTime=lakehouse.trigger_interval)
                   .foreachBatch(handler).start)


def batch_handler(spark: SparkSession, settings: Settings, stream: str) -> MicroBatchWriter:
    """The dashboards' sinks the configuration names, in the handler's order."""
    influxdb = InfluxWriter.from_config(settings.influxdb)
    views = (GrafanaLivePusher.from_config(settings.grafana_live),) if settings.grafana_live else ()
    checkpoint = checkpoint_of(settings, "dashboards")
    this_query, batch_ms = cache(partial(query_id, spark, checkpoint)), partial(batch_time_ms, spark, checkpoint)
    return MicroBatchWriter(
        stream=stream,
        windows=LineSinks(partial(aggregate_line, settings.contract), influxdb, views,
                          LiveLimits(spark, settings.limits, settings.contract) if settings.limits else None),
        refused=DeadLetters(settings.dead_letter, influxdb, stream, batch_ms, this_query),
        invalid=DeadLetters(settings.dead_letter, influxdb, f"{settings.job.name}_dead_letters", batch_ms,
                            this_query),
        metrics=metrics_writer(influxdb) if settings.job.self_metrics else None)
