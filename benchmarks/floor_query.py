"""Spark's own floor for the dashboards' windows, run under the job's own spark-submit argv and session
(`benchmarks.per_batch --queries`): the job's source, watermark, window sizes and levels and aggregation code
(`transforms.aggregate`), with a plain typed `from_json` in place of the contract's parse, no dead letters, and each
batch's windows written to InfluxDB with influxdb-client from the driver, as a user's `foreachBatch` would.

- `f2`: count and the means, every window size and level in one aggregation (the job's shape);
- `f3`: f2 after the job's deduplication (`dropDuplicatesWithinWatermark` on `events.DEDUPLICATION_KEY`);
- `f3_stats`: f3 with every statistic the job computes (mean, min, max, last, stddev, p95);
- `f3_stats_lakehouse`: f3_stats beside Spark's own bronze and gold queries in the same application, as a user
  would write them: the source appended to a Delta table by Delta's streaming sink, and that table read as a stream,
  parsed, deduplicated and windowed with `lakehouse.gold_lateness`, each batch merged into a Delta table on the
  window's identity (the tables are `lakehouse.bronze` and `lakehouse.gold`, every query in its fair-scheduler
  pool and on `lakehouse.trigger_interval` as the job's).

    spark-submit ... benchmarks/floor_query.py f3 --env local --set K=V ...
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streamdash.command_line import configure_logging
from streamdash.config import Contract, Settings, load_settings
from streamdash.events import DEDUPLICATION_KEY
from streamdash.job import parse_args
from streamdash.metrics import InfluxProgressListener
from streamdash.pipeline import SCHEDULER_POOLS
from streamdash.session import spark_session
from streamdash.sinks import delta
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.points import aggregate_line
from streamdash.sources import kafka
from streamdash.transforms.aggregate import deduplicate, windowed_aggregates

QUERIES = ("f2", "f3", "f3_stats", "f3_stats_lakehouse")
# The simulator's payload; the event time as text, since half the live simulator's records carry ISO-8601 times.
SCHEMA = ("deviceId string, site string, deviceType string, eventTime string, seq long, "
          "measurements struct<temperature double, humidity double, pressure double, battery double>")
log = logging.getLogger("streamdash.job")  # `testing.pipeline.Job` waits for its "started" line


def typed_events(raw: DataFrame) -> DataFrame:
    """A typed `from_json` of the simulator's payload: the event columns `windowed_aggregates` reads."""
    event = F.from_json(F.col("value").cast("string"), SCHEMA).alias("e")
    text = F.col("e.eventTime")
    event_time = F.coalesce(F.timestamp_millis(text.try_cast("long")), text.try_cast("timestamp"))
    return (raw.select(event)
            .select(F.col("e.deviceId").alias("device_id"), F.col("e.site").alias("site"),
                    F.col("e.deviceType").alias("device_type"), event_time.alias("event_time"),
                    F.col("e.seq").alias("seq"), "e.measurements.*")
            .where(F.col("device_id").isNotNull() & F.col("site").isNotNull() & F.col("event_time").isNotNull()))


def start_lakehouse(spark: SparkSession, settings: Settings) -> None:
    """Spark's own bronze and gold queries, each in the pool the job's would run in."""
    lakehouse, aggregation = settings.lakehouse, settings.aggregation
    checkpoints = settings.job.checkpoint_location.rstrip("/")
    spark.sparkContext.setLocalProperty("spark.scheduler.pool", SCHEDULER_POOLS["bronze"])
    delta.create_bronze(spark, lakehouse.bronze)  # the gold query reads it from the start
    (delta.bronze_records(kafka.read_stream(spark, settings.source)).writeStream.format("delta")
     .partitionBy(delta.BRONZE_PARTITION).option("checkpointLocation", f"{checkpoints}/spark_bronze")
     .trigger(processingTime=lakehouse.trigger_interval).start(lakehouse.bronze))
    windows = windowed_aggregates(
        deduplicate(typed_events(spark.readStream.format("delta").load(lakehouse.bronze)), lakehouse.gold_lateness,
                    DEDUPLICATION_KEY), aggregation.window_sizes, aggregation.quantile_sketch_k, Contract())

    def merge(batch: DataFrame, batch_id: int) -> None:
        rows = delta.gold_rows(batch, batch_id)
        if not delta.exists(spark, lakehouse.gold):
            rows.write.format("delta").save(lakehouse.gold)
            return
        rows.createOrReplaceTempView("gold_batch")
        on = " AND ".join(f"t.`{key}` <=> s.`{key}`" for key in delta.GOLD_KEY)
        batch.sparkSession.sql(f"MERGE INTO delta.`{lakehouse.gold}` t USING gold_batch s ON {on} "
                               "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")

    (windows.writeStream.outputMode("update").option("checkpointLocation", f"{checkpoints}/spark_gold")
     .trigger(processingTime=lakehouse.trigger_interval).foreachBatch(merge).start())
    spark.sparkContext.setLocalProperty("spark.scheduler.pool", SCHEDULER_POOLS["dashboards"])


def main(argv: list[str]) -> None:
    query, args = argv[0], parse_args(argv[1:], Path(__file__).resolve().parent.parent / "conf")
    assert query in QUERIES, f"{query}: one of {QUERIES}"
    configure_logging()
    settings = load_settings(args.env, args.conf_dir, args.overrides)
    spark = spark_session(settings)
    influx = settings.influxdb
    spark.streams.addListener(InfluxProgressListener(InfluxWriter.from_config(influx)))
    if query == "f3_stats_lakehouse":
        start_lakehouse(spark, settings)
    contract = Contract() if query.startswith("f3_stats") else Contract(statistics=["mean"])
    aggregation = settings.aggregation
    unique = deduplicate(typed_events(kafka.read_stream(spark, settings.source)), aggregation.watermark,
                         None if query == "f2" else DEDUPLICATION_KEY)
    windows = windowed_aggregates(unique, aggregation.window_sizes, aggregation.quantile_sketch_k, contract)
    client = InfluxDBClient(url=influx.url, token=influx.token.get_secret_value(), org=influx.org)
    writer = client.write_api(write_options=SYNCHRONOUS)

    def write(batch: DataFrame, batch_id: int) -> None:
        lines = [aggregate_line(contract, row.asDict(recursive=True)) for row in batch.collect()]
        writer.write(bucket=influx.bucket, record=[line for line in lines if line])

    name = f"{settings.job.name}_aggregates"
    (windows.writeStream.outputMode("update").queryName(name)
     .option("checkpointLocation", f"{settings.job.checkpoint_location.rstrip('/')}/{query}")
     .trigger(processingTime=settings.job.trigger_interval).foreachBatch(write).start())
    log.info("started %d queries: %s (%s)", len(spark.streams.active), name, query)
    spark.streams.awaitAnyTermination()  # any of its queries failing ends it


if __name__ == "__main__":
    main(sys.argv[1:])
