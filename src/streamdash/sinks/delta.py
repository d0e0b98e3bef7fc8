"""The Delta tables beside InfluxDB, each the sink of a streaming query of its own (`pipeline`):

- **bronze** (`BRONZE_COLUMNS`, partitioned by `ingest_date`): every record as read, appended by Delta's own
  streaming sink, exactly once through the query's checkpoint;
- **gold** (the columns of `windowed_aggregates` but `newest_event_ns`, with `window_start` as a timestamp, plus
  `batch_id` and `updated_at`): each window merged on its identity (level, window, window_start, site, device_id),
  so a window re-emitted in update mode updates its row and a replayed batch writes the same values again
  (`GoldTable`, the gold query's `foreachBatch`, and the backfill's).

A table is a name (Unity Catalog: `catalog.schema.table`) or a path (anything with a `/`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streamdash.columns import HEADERS_TYPE, RAW_COLUMNS, READ_AT
from streamdash.metrics import gold_line, write_metric
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.report import WriteReport
from streamdash.storage import file_system, hadoop_path
from streamdash.transforms.aggregate import window_end_ms

GOLD_KEY = ("level", "window", "window_start", "site", "device_id")


def is_path(table: str) -> bool:
    return "/" in table


def sql_name(table: str) -> str:
    """How SQL names `table`."""
    return f"delta.`{table}`" if is_path(table) else table


def read(spark: SparkSession, table: str) -> DataFrame:
    return spark.read.format("delta").load(table) if is_path(table) else spark.read.table(table)


def exists(spark: SparkSession, table: str) -> bool:
    if not is_path(table):
        return spark.catalog.tableExists(table)
    return file_system(spark, table).exists(hadoop_path(spark, f"{table.rstrip('/')}/_delta_log"))


def append(rows: DataFrame, table: str, writer_options: dict[str, str], partition_by: tuple[str, ...] = ()) -> None:
    writer = rows.write.format("delta").mode("append").options(**writer_options).partitionBy(*partition_by)
    writer.save(table) if is_path(table) else writer.saveAsTable(table)


# A record as bronze keeps it: as the source read it (`columns.RAW_COLUMNS`), when the job read it (`READ_AT`: the
# batch's time, which the parse judges its event time against) and that day (the table's partition).
BRONZE_PARTITION = "ingest_date"
BRONZE_COLUMNS = (*RAW_COLUMNS, READ_AT, BRONZE_PARTITION)
BRONZE_SCHEMA = ("key string, value binary, topic string, partition int, offset long, kafka_timestamp timestamp, "
                 f"kafka_timestamp_type int, headers {HEADERS_TYPE}, {READ_AT} timestamp, {BRONZE_PARTITION} date")


def bronze_records(raw: DataFrame) -> DataFrame:
    """Raw records (a stream) as bronze keeps them."""
    read_at = F.current_timestamp()
    return raw.withColumn(READ_AT, read_at).withColumn(BRONZE_PARTITION, F.to_date(read_at))


def create_bronze(spark: SparkSession, table: str) -> None:
    """An empty bronze table, if there is none: the gold query reads it from its first start."""
    if not exists(spark, table):
        append(spark.createDataFrame([], BRONZE_SCHEMA), table, {}, (BRONZE_PARTITION,))


def read_stream(spark: SparkSession, table: str) -> DataFrame:
    reader = spark.readStream.format("delta")
    return reader.load(table) if is_path(table) else reader.table(table)


def gold_rows(windows: DataFrame, batch_id: int) -> DataFrame:
    """Windows (`windowed_aggregates`' columns) as the gold table's rows."""
    return (windows.drop("newest_event_ns")
            .withColumn("window_start", F.timestamp_micros((F.col("window_start_ns") / 1000).cast("long")))
            .drop("window_start_ns")
            .withColumn("batch_id", F.lit(batch_id).cast("long")).withColumn("updated_at", F.current_timestamp()))


@dataclass(frozen=True)
class GoldTable:
    table: str

    def write(self, windows: DataFrame, batch_id: int) -> WriteReport:
        spark = windows.sparkSession
        rows = gold_rows(windows, batch_id)
        if not exists(spark, self.table):  # the first batch creates it (a replay of that batch then merges)
            append(rows, self.table, {})
            return WriteReport(written=rows.count())
        start_us = F.unix_micros("window_start")  # not datetimes: Python would read them in its own time zone
        count, first, last = rows.agg(F.count(F.lit(1)), F.min(start_us), F.max(start_us)).first()
        if not count:  # a batch of late events and duplicates changes no window
            return WriteReport()
        view = "streamdash_gold_batch"
        rows.createOrReplaceTempView(view)
        try:
            # The batch's range of window starts lets Delta skip the files of older windows: the cost of a merge
            # stays that of the recent windows however long the table gets.
            in_range = f"t.window_start BETWEEN timestamp_micros({first}) AND timestamp_micros({last})"
            matched = " AND ".join([in_range, *(f"t.`{key}` <=> s.`{key}`" for key in GOLD_KEY)])
            # A contract that gained a measurement or statistic adds its columns (`carry_over`).
            spark.sql(f"MERGE WITH SCHEMA EVOLUTION INTO {sql_name(self.table)} t USING {view} s ON {matched} "
                      "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")
        finally:
            spark.catalog.dropTempView(view)
        return WriteReport(written=count)


@dataclass(frozen=True)
class GoldBatches:
    """The gold query's `foreachBatch`: each batch merged into gold, and how many of its windows the dashboards had
    closed by then (`pipeline_writes` of the gold stream: windows_merged, windows_late_for_dashboards). Such a
    window took an event after the dashboards' watermark had passed its end, which they dropped as late: gold's
    window differs from theirs."""

    gold: GoldTable
    stream: str
    window_sizes: list[str]  # `aggregation.window_sizes`
    dashboards_watermark_ms: Callable[[int], int | None]  # batch id -> where the dashboards' stood (None: not yet)
    metrics: InfluxWriter | None = None

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        batch.persist()  # read more than once
        try:
            merged = self.gold.write(batch, batch_id).written
            closed_ms = self.dashboards_watermark_ms(batch_id)
            late = (0 if closed_ms is None or not merged
                    else batch.where(window_end_ms(self.window_sizes) <= closed_ms).count())
        finally:
            batch.unpersist()
        if self.metrics:
            write_metric(self.metrics, gold_line(self.stream, batch_id, merged, late), self.stream)
