"""The dead-letter sink: every record that failed validation and every point InfluxDB refused, kept with its
reason, plus a count per reason in InfluxDB (`pipeline_deadletter`).

Records land under `<path>`: as JSON lines in one folder per query and micro-batch
(`stream=<query>/batch_id=<n>`, overwritten on a replay), or as a Delta table appended with
`txnAppId`/`txnVersion` so a replayed batch is skipped. Columns: payload, topic, partition, offset,
kafka_timestamp (null for refused points), reason, detail (InfluxDB's message for refused points), batch_id,
dead_lettered_at.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from streamdash.config import DeadLetterSink
from streamdash.events import Reason
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.lines import write_rows
from streamdash.sinks.points import dead_letter_count_line
from streamdash.sinks.report import WriteReport, record_blocked

log = logging.getLogger(__name__)
RECORD_COLUMNS = ("payload", "topic", "partition", "offset", "kafka_timestamp", "reason", "detail")
REJECTED_SCHEMA = ("payload string, topic string, partition int, offset long, kafka_timestamp timestamp, "
                   "reason string, detail string, time_us long")


def write(records: DataFrame, time_us: Column, sink: DeadLetterSink, writer: InfluxWriter, stream: str,
          batch_id: int) -> WriteReport:
    """Write one micro-batch's dead letters (`RECORD_COLUMNS`) and their count per reason.

    `time_us` dates each record for the count points; a count point's identity (stream, reason, newest time,
    batch id) is the same on a replay, so a replay overwrites it. The first action reads the whole batch into
    the cache, so the source is read once and the query's input rows are exact.
    """
    records = records.select(*RECORD_COLUMNS, time_us.alias("time_us"), F.lit(batch_id).alias("batch_id")).persist()
    try:
        if records.count() == 0:
            return WriteReport()
        stamped = records.drop("time_us").withColumn("dead_lettered_at", F.current_timestamp())
        if sink.format == "delta":
            (stamped.write.format("delta").mode("append").option("txnAppId", stream).option("txnVersion", batch_id)
             .option("mergeSchema", "true").save(sink.path))
        else:
            stamped.drop("batch_id").write.mode("overwrite").json(
                f"{sink.path.rstrip('/')}/stream={stream}/batch_id={batch_id}")
        counts = records.groupBy("reason", "batch_id").agg(F.count(F.lit(1)).alias("count"),
                                                          F.max("time_us").alias("max_time_us"))
        [report] = write_rows(counts, partial(dead_letter_count_line, stream=stream), [writer])
        for line, why in report.rejected:
            log.error("InfluxDB refused a dead-letter count (%s): %s", why, line)
        return report
    finally:
        records.unpersist()


def foreach_batch(sink: DeadLetterSink, writer: InfluxWriter, stream: str) -> Callable[[DataFrame, int], None]:
    """The dead-letter query's handler: records that failed validation (`transforms.parse.dead_letters`)."""

    def write_batch(batch: DataFrame, batch_id: int) -> None:
        report = write(batch.withColumn("detail", F.lit(None).cast("string")), F.unix_micros("kafka_timestamp"),
                       sink, writer, stream, batch_id)
        record_blocked(stream, batch_id, report.blocked_s)

    return write_batch


def write_rejected(spark: SparkSession, rejected: list[tuple[str, str]], sink: DeadLetterSink,
                   writer: InfluxWriter, stream: str, batch_id: int) -> WriteReport:
    """Points InfluxDB refused (field-type conflict, beyond retention, too large) as `sink_rejected`."""
    rows = [(line, None, None, None, None, Reason.SINK_REJECTED, why, _line_time_us(line)) for line, why in rejected]
    log.warning("%s batch %d: InfluxDB refused %d points; they are dead letters (reason %s), e.g. %s", stream,
                batch_id, len(rows), Reason.SINK_REJECTED, rejected[0][1])
    records = spark.createDataFrame(rows, REJECTED_SCHEMA)
    return write(records, F.col("time_us"), sink, writer, stream, batch_id)


def _line_time_us(line: str) -> int | None:
    try:
        return int(line.rsplit(" ", 1)[1]) // 1000
    except (IndexError, ValueError):
        return None
