"""The dead-letter sink: every record that failed validation and every point InfluxDB refused, kept with its
reason, plus a count per reason in InfluxDB (`pipeline_deadletter`).

Records land under `<path>`: as JSON lines in one folder per stream and micro-batch (`stream=<stream>/batch_id=<n>`;
the stream is `<job>_dead_letters` for records that failed validation, `<job>_aggregates` for points InfluxDB
refused), in files named by the query's id (`part-<query id>-<n>.json`), which a replay replaces and a new
checkpoint's batch of the same number does not; or as a Delta table appended with `txnAppId` (the stream and the
query's id) and `txnVersion` (the batch id), so a replayed batch is skipped.
Columns: payload, topic, partition, offset, kafka_timestamp (null for refused points), headers (where the source
read them: a contract with a `header:` field; base64 values in JSON), reason, detail (InfluxDB's message for refused
points), batch_id, dead_lettered_at.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from streamdash.columns import HEADERS_TYPE
from streamdash.config import DeadLetterSink
from streamdash.events import Reason
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.points import dead_letter_count_line
from streamdash.sinks.report import WriteReport
from streamdash.storage import replace_parts, write_bytes
from streamdash.transforms.parse import DEAD_LETTER_COLUMNS

log = logging.getLogger(__name__)
RECORD_COLUMNS = ("payload", "topic", "partition", "offset", "kafka_timestamp", "headers", "reason", "detail")
REJECTED_SCHEMA = ("payload string, topic string, partition int, offset long, kafka_timestamp timestamp, "
                   f"headers {HEADERS_TYPE}, reason string, detail string")
# Up to this much JSON, a batch's dead letters are written from the driver as one file: a Spark write job costs
# about half a second, which a live batch with a few dead letters would pay every time. Above it (a flood of
# malformed records), Spark's writer writes them from the executors.
MAX_JSON_BYTES_FROM_DRIVER = 16 * 1024 * 1024


def _json_bytes(record: list[Column]) -> Column:
    """The size of a dead letter's JSON line without its stamp (what chooses the driver or the executors)."""
    return F.octet_length(F.to_json(F.struct(*record)))


def tally(letter: Column) -> Column:
    """A dead letter (a struct of `DEAD_LETTER_COLUMNS`) as what its count needs (`columns.TALLY`): its reason
    and the size of its JSON line; so the handler's one pass over a batch counts the dead letters as it writes
    the windows."""
    record = [*(letter[name].alias(name) for name in DEAD_LETTER_COLUMNS), F.lit(None).cast("string").alias("detail")]
    return F.struct(letter["reason"].alias("reason"), _json_bytes(record).alias("json_bytes"))


def invalid_records(letters: DataFrame) -> DataFrame:
    """Records that failed validation (`transforms.parse.DEAD_LETTER_COLUMNS`) as dead letters."""
    return letters.select(*DEAD_LETTER_COLUMNS, F.lit(None).cast("string").alias("detail"))


def refused_points(spark: SparkSession, rejected: list[tuple[str, str]]) -> DataFrame:
    """Points InfluxDB refused (field-type conflict, beyond retention, too large) as dead letters (`sink_rejected`)."""
    rows = [(line, None, None, None, None, None, Reason.SINK_REJECTED, why) for line, why in rejected]
    return spark.createDataFrame(rows, REJECTED_SCHEMA)


@dataclass(frozen=True)
class DeadLetters:
    """A `BatchSink` for the dead letters of one stream: the records under `config.path`, their count per reason in
    InfluxDB (through `counts`)."""

    config: DeadLetterSink
    counts: InfluxWriter
    stream: str
    # When the query planned a batch (`checkpoint.batch_time_ms`), which dates its count points: the job's clock,
    # never a device's, and the same on a replay.
    batch_time_ms: Callable[[int], int]
    # The query's id (`checkpoint.query_id`), part of a Delta table's `txnAppId`: a new checkpoint numbers its
    # batches from 0 again, and Delta would skip them as replays of the old checkpoint's.
    query_id: Callable[[], str] | None = None

    def write(self, records: DataFrame, batch_id: int, counts: list[dict] | None = None) -> WriteReport:
        """Write one micro-batch's dead letters (`RECORD_COLUMNS`) and their count per reason; reports how many
        records it wrote. `counts` are those counts when a pass over the batch has already made them (`tally`;
        {"reason", "count", "json_bytes"} each): without dead letters, nothing is read at all.

        A count point's identity (stream, reason, the batch's time, batch id) is the same on a replay, so a replay
        overwrites it. `records` is read more than once: it must be cheap to read again (a persisted batch, or rows
        from the driver).
        """
        sink, stream = self.config, self.stream
        stamped = records.select(*RECORD_COLUMNS, F.lit(batch_id).alias("batch_id"),
                                 F.current_timestamp().alias("dead_lettered_at"))
        as_json = F.to_json(F.struct(*RECORD_COLUMNS, "dead_lettered_at"))  # what Spark's JSON writer writes
        # Counted before the stamp, which adds the same few bytes to each line: Spark writes a query's time into its
        # generated code as a constant, so an aggregate that read it would be compiled anew for every batch.
        if counts is None:
            counts = [row.asDict() for row in records.groupBy("reason").agg(
                F.count(F.lit(1)).alias("count"), F.sum(_json_bytes(list(RECORD_COLUMNS))).alias("json_bytes"))
                .collect()]
        if not counts:
            return WriteReport()
        folder = f"{sink.path.rstrip('/')}/stream={stream}/batch_id={batch_id}"
        if sink.format == "delta":
            app_id = stream if self.query_id is None else f"{stream}-{self.query_id()}"
            (stamped.write.format("delta").mode("append").option("txnAppId", app_id)
             .option("txnVersion", batch_id).option("mergeSchema", "true").save(sink.path))
        else:
            spark, owner = records.sparkSession, "0" if self.query_id is None else self.query_id()
            if sum(row["json_bytes"] for row in counts) <= MAX_JSON_BYTES_FROM_DRIVER:
                text = "".join(f"{row[0]}\n" for row in stamped.select(as_json).collect())
                replace_parts(spark, folder, owner,
                              lambda staging: write_bytes(spark, f"{staging}/part-00000.json", text.encode()))
            else:
                replace_parts(spark, folder, owner,
                              lambda staging: stamped.drop("batch_id").write.mode("overwrite").json(staging))
        report = self.counts.write_lines([dead_letter_count_line(row, stream, batch_id, self.batch_time_ms(batch_id))
                                          for row in counts])
        for line, why in report.rejected:
            log.error("InfluxDB refused a dead-letter count (%s): %s", why, line)
        return WriteReport(written=sum(row["count"] for row in counts), blocked_s=report.blocked_s)
