"""The Delta tables beside InfluxDB: every raw record (bronze) and every window (gold), exactly once across
restarts. Both are `BatchSink`s the handler writes after InfluxDB.

- **bronze** (`RECORD_COLUMNS` plus `ingest_date`, partitioned by it): each micro-batch appended once, with Delta's
  idempotent writes (`txnAppId`: the query's id, which a new checkpoint changes; `txnVersion`: the batch id), so a
  batch replayed after a crash is skipped.
- **gold** (the columns of `windowed_aggregates` but `newest_event_ns`, with `window_start` as a timestamp, plus
  `batch_id` and `updated_at`): each window merged on its identity (level, window, window_start, site, device_id),
  so a window re-emitted in update mode updates its row and a replayed batch writes the same values again.

A table is a name (Unity Catalog: `catalog.schema.table`) or a path (anything with a `/`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streamdash.sinks.report import WriteReport
from streamdash.storage import file_system, hadoop_path

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


@dataclass(frozen=True)
class BronzeTable:
    table: str
    app_id: Callable[[], str]  # the query's id, read when the first batch is written

    def write(self, records: DataFrame, batch_id: int) -> WriteReport:
        rows = records.withColumn("ingest_date", F.to_date("ingested_at"))
        append(rows, self.table, {"txnAppId": f"bronze-{self.app_id()}", "txnVersion": str(batch_id)},
               ("ingest_date",))
        return WriteReport(written=rows.count())


def gold_rows(windows: DataFrame, batch_id: int) -> DataFrame:
    """Windows (`windowed_aggregates`' columns) as the gold table's rows."""
    return (windows.drop("newest_event_ns", "dead_letter", "record", "parsed")
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
            spark.sql(f"MERGE INTO {sql_name(self.table)} t USING {view} s ON {matched} "
                      "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")
        finally:
            spark.catalog.dropTempView(view)
        return WriteReport(written=count)
