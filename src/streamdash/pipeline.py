"""The pipeline, composed: source -> parse -> split -> deduplicate -> aggregate -> sinks, as one streaming query.

Each trigger reads the topic and parses each record once; the valid events are deduplicated and aggregated for
every window size and level in one stateful pass; the windows and the dead letters leave as one output
(`transforms.batch`), which the handler (`sinks.micro_batch`) writes. The query's checkpoint
(`<job.checkpoint_location>/aggregates`) holds offsets and state, so a restart replays exactly what was not committed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, partial

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from streamdash.checkpoint import batch_time_ms, check_checkpoint, query_id
from streamdash.columns import EVENT_TIME_ADJUSTED, READ_AT
from streamdash.config import Settings
from streamdash.metrics import metrics_writer
from streamdash.sinks.dead_letter import DeadLetters
from streamdash.sinks.delta import BronzeTable, GoldTable
from streamdash.sinks.grafana_live import GrafanaLivePusher
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.lines import LineSinks
from streamdash.sinks.micro_batch import MicroBatchWriter
from streamdash.sinks.points import aggregate_line
from streamdash.sources import eventhubs_native, kafka
from streamdash.transforms.aggregate import deduplicate, state_layout, windowed_aggregates
from streamdash.transforms.batch import query_output, split_once
from streamdash.transforms.parse import parse_events, reference_time


def read_source(spark: SparkSession, settings: Settings) -> DataFrame:
    """The configured source, as `columns.RAW_COLUMNS`."""
    if settings.source.kind == "eventhubs_native":
        return eventhubs_native.read_stream(spark, settings.source)
    return kafka.read_stream(spark, settings.source)


def query_checkpoints(settings: Settings) -> dict[str, str]:
    """Each streaming query's name and checkpoint (there is one query)."""
    return {f"{settings.job.name}_aggregates": f"{settings.job.checkpoint_location.rstrip('/')}/aggregates"}


def query_starters(spark: SparkSession, settings: Settings) -> dict[str, Callable[[], StreamingQuery]]:
    """One function per streaming query (there is one) that starts it, again after a failure, from its checkpoint."""
    contract, job = settings.contract, settings.job
    checkpoint = job.checkpoint_location.rstrip("/")
    check_checkpoint(spark, checkpoint, state_layout(contract))

    keep_records = settings.lakehouse.bronze is not None
    raw, reference = read_source(spark, settings), None
    if keep_records:  # kept with each record: the batch's time, read beside the source as the parse reads it
        raw = raw.withColumn(READ_AT, F.current_timestamp())
        reference = reference_time(F.col(READ_AT))
    parsed = parse_events(raw, settings.validation, contract, reference)
    if settings.validation.early_events == "adjust":  # counted in pipeline_progress as early_events_adjusted
        parsed = parsed.observe("early_events", F.count_if(F.col(EVENT_TIME_ADJUSTED)).alias("adjusted"))
    events, records = split_once(parsed, keep_records, settings.aggregation.watermark)
    unique = deduplicate(events, settings.aggregation.watermark, contract.deduplicate)
    windows = windowed_aggregates(unique, settings.aggregation.window_sizes, settings.aggregation.quantile_sketch_k,
                                  contract)
    output = query_output(windows, records)

    [(name, query_checkpoint)] = query_checkpoints(settings).items()
    return {name: partial(output.writeStream.outputMode("update").queryName(name)
                          .option("checkpointLocation", query_checkpoint)
                          .trigger(processingTime=job.trigger_interval)
                          .foreachBatch(batch_handler(spark, settings, name)).start)}


def batch_handler(spark: SparkSession, settings: Settings, stream: str) -> MicroBatchWriter:
    """The sinks the configuration names, in the handler's order."""
    influxdb = InfluxWriter.from_config(settings.influxdb)
    views = (GrafanaLivePusher.from_config(settings.grafana_live),) if settings.grafana_live else ()
    lakehouse = settings.lakehouse
    checkpoint = query_checkpoints(settings)[stream]
    this_query, batch_ms = cache(partial(query_id, spark, checkpoint)), partial(batch_time_ms, spark, checkpoint)
    return MicroBatchWriter(
        stream=stream,
        windows=LineSinks(partial(aggregate_line, settings.contract), influxdb, views),
        refused=DeadLetters(settings.dead_letter, influxdb, stream, batch_ms, this_query),
        invalid=DeadLetters(settings.dead_letter, influxdb, f"{settings.job.name}_dead_letters", batch_ms,
                            this_query),
        metrics=metrics_writer(influxdb) if settings.job.self_metrics else None,
        gold=GoldTable(lakehouse.gold) if lakehouse.gold else None,
        bronze=BronzeTable(lakehouse.bronze, this_query)
        if lakehouse.bronze else None)
