"""The dead-letter sink: every record that failed validation, kept with its reason, plus a count per reason.

Records land under `<path>`: as JSON lines in one folder per micro-batch (`batch_id=<n>`, overwritten on a
replay), or as a Delta table appended with `txnAppId`/`txnVersion` so a replayed batch is skipped. Each
micro-batch also writes, per reason, a count point to InfluxDB (`pipeline_deadletter`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from streamdash.config import DeadLetterSink
from streamdash.sinks.influxdb import InfluxWriter, write_partition
from streamdash.sinks.points import dead_letter_count_line


def foreach_batch(sink: DeadLetterSink, writer: InfluxWriter, app_id: str) -> Callable[[DataFrame, int], None]:
    def write_batch(batch: DataFrame, batch_id: int) -> None:
        if batch.isEmpty():
            return
        batch = batch.withColumn("batch_id", F.lit(batch_id)).persist()
        try:
            records = batch.withColumn("dead_lettered_at", F.current_timestamp())
            if sink.format == "delta":
                (records.write.format("delta").mode("append").option("txnAppId", app_id)
                 .option("txnVersion", batch_id).save(sink.path))
            else:
                records.drop("batch_id").write.mode("overwrite").json(f"{sink.path.rstrip('/')}/batch_id={batch_id}")
            counts = batch.groupBy("reason", "batch_id").agg(
                F.count(F.lit(1)).alias("count"),
                F.unix_micros(F.max("kafka_timestamp")).alias("max_kafka_timestamp_us"))
            counts.foreachPartition(partial(write_partition, writer, dead_letter_count_line, None))
        finally:
            batch.unpersist()

    return write_batch
