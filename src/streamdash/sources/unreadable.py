"""Records Spark's Kafka source cannot read, and the way past them.

The source turns each record's timestamp (milliseconds) into a TIMESTAMP (microseconds) with an exact
multiplication: a record stamped beyond `MAX_TIMESTAMP_MS` (a producer's clock or a bug, on a topic whose
`message.timestamp.after.max.ms` lets it in) fails every batch that holds it with `long overflow`, restarts
included, and no option of the source skips it (Spark refuses `kafka.interceptor.classes`).

So when a query fails so, the job finds the record with a Kafka consumer of its own (the driver's, with the source's
settings), and moves the query's offsets past it in its checkpoint, in two steps, each a start of the query:

1. the record lies inside the failing batch's range of its partition: the batch is cut short before it (its end
   offset there becomes the record's), so the records before it are read and committed as usual;
2. the record is the first of the failing batch's range (as it is after step 1): the committed batch before it (or
   the query's first offsets) is taken to end after it, so the failing batch, never committed, runs again from
   there to its logged end.

The dashboards' query dead-letters the record (`unreadable_record`, with its topic, partition, offset and timestamp;
the detail says why) and counts it, at step 2; the bronze query, which keeps records as read, skips it with a log
line. Nothing else is skipped, and a batch is only ever cut at a record the source cannot read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import partial

from pyspark.sql import SparkSession

from streamdash.checkpoint import batch_time_ms, query_id, uncommitted_batch
from streamdash.config import DeadLetterSink, KafkaSource
from streamdash.events import Reason
from streamdash.sinks.dead_letter import REJECTED_SCHEMA, DeadLetters
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sources.kafka import kafka_options, on_databricks
from streamdash.storage import file_system, hadoop_path, read_text, write_text

log = logging.getLogger(__name__)
MAX_TIMESTAMP_MS = (2**63 - 1) // 1000  # the largest milliseconds Spark's TIMESTAMP (microseconds) holds
_POLL_S, _EMPTY_POLLS = 5, 6  # a range the broker yields nothing of for 30 s is given up on


def is_unreadable_failure(error: Exception | None) -> bool:
    """Whether a query failed in Spark's Kafka source converting a record (its timestamp)."""
    text = str(error or "")
    return "long overflow" in text and "KafkaRecordToRowConverter" in text


@dataclass(frozen=True)
class Unreadable:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes | None

    def dead_letter(self) -> tuple:
        """The record as a dead letter's columns (`sinks.dead_letter.RECORD_COLUMNS`)."""
        payload = None if self.value is None else self.value.decode("utf-8", errors="replace")
        return (payload, self.topic, self.partition, self.offset, None, None, Reason.UNREADABLE_RECORD,
                f"Kafka timestamp {self.timestamp_ms} ms is beyond what Spark's source can read "
                f"(|timestamp| <= {MAX_TIMESTAMP_MS} ms)")


def _client_class_name(name: str) -> str:
    """A class name of the driver's Kafka client, shaded on Databricks."""
    return ("kafkashaded." if on_databricks() else "") + name


def _kafka_class(spark: SparkSession, name: str):
    package = spark.sparkContext._jvm
    for part in _client_class_name(name).split("."):
        package = getattr(package, part)
    return package


def find_unreadable(spark: SparkSession, source: KafkaSource, ranges: dict[int, tuple[int, int]]
                    ) -> Unreadable | None:
    """The first record the source cannot read in `ranges` ({partition: [start, end)} of `source.topic`), read with
    the driver's Kafka consumer; None where every record there can be read."""
    jvm = spark.sparkContext._jvm
    properties = jvm.java.util.Properties()
    for key, value in kafka_options(source).items():
        if key.startswith("kafka.") and key != "kafka.group.id":
            properties.put(key.removeprefix("kafka."), value)
    deserializer = _client_class_name("org.apache.kafka.common.serialization.ByteArrayDeserializer")
    properties.put("key.deserializer", deserializer)
    properties.put("value.deserializer", deserializer)
    properties.put("enable.auto.commit", "false")
    consumer = _kafka_class(spark, "org.apache.kafka.clients.consumer.KafkaConsumer")(properties)
    try:
        for partition, (start, end) in sorted(ranges.items()):
            topic_partition = _kafka_class(spark, "org.apache.kafka.common.TopicPartition")(source.topic, partition)
            consumer.assign([topic_partition])
            consumer.seek(topic_partition, start)
            position, empty = start, 0
            while position < end and empty < _EMPTY_POLLS:
                records = consumer.poll(jvm.java.time.Duration.ofSeconds(_POLL_S)).records(topic_partition)
                empty = empty + 1 if records.isEmpty() else 0
                for record in records:
                    position = record.offset()
                    if position >= end:
                        break
                    if abs(record.timestamp()) > MAX_TIMESTAMP_MS:
                        value = record.value()
                        return Unreadable(source.topic, partition, position, record.timestamp(),
                                          None if value is None else bytes(value))
                    position += 1
    finally:
        consumer.close()
    return None


def _offsets(text: str) -> tuple[list[str], dict]:
    """An offsets file's lines before the source's and the source's offsets (one source per query)."""
    *head, offsets = text.rstrip("\n").split("\n")
    return head, json.loads(offsets)


def _rewrite(spark: SparkSession, path: str, head: list[str], offsets: dict) -> None:
    file_system(spark, path).delete(hadoop_path(spark, path), False)
    write_text(spark, path, "\n".join([*head, json.dumps(offsets, separators=(",", ":"))]))


@dataclass(frozen=True)
class UnreadableRecords:
    """What `job.run` asks when a query fails in the Kafka source: one step past the record (`skip`). The dashboards'
    query dead-letters it into `dead_letters` (the stream `<stream>_<partition>`, the record's offset as its batch
    id: both say which record, and a repeat overwrites); the bronze query has no `dead_letters`."""

    spark: SparkSession
    source: KafkaSource
    dead_letters: DeadLetterSink | None
    counts: InfluxWriter
    stream: str

    def skip(self, name: str, checkpoint: str) -> bool:
        """Take one step past the record the failing batch of the query `name` cannot read; False where there is no
        such record in it (the failure is another)."""
        root = checkpoint.rstrip("/")
        failing = uncommitted_batch(self.spark, root)
        if failing is None:
            return False
        start_path = f"{root}/offsets/{failing - 1}" if failing else f"{root}/sources/0/0"
        start_head, start = _offsets(read_text(self.spark, start_path) or "")
        end_head, end = _offsets(read_text(self.spark, f"{root}/offsets/{failing}") or "")
        topic = self.source.topic
        ranges = {int(p): (start.get(topic, {}).get(p, 0), offset) for p, offset in end.get(topic, {}).items()}
        found = find_unreadable(self.spark, self.source, ranges)
        if found is None:
            return False
        where = f"{found.topic} partition {found.partition} offset {found.offset}"
        if found.offset > ranges[found.partition][0]:
            end[topic][str(found.partition)] = found.offset
            _rewrite(self.spark, f"{root}/offsets/{failing}", end_head, end)
            log.error("query %s: Spark's Kafka source cannot read %s (timestamp %d ms); batch %d now ends before it, "
                      "and the record is skipped once the batch is committed", name, where, found.timestamp_ms,
                      failing)
            return True
        if self.dead_letters is not None:
            planned_ms = batch_time_ms(self.spark, root, failing)
            sink = DeadLetters(self.dead_letters, self.counts, f"{self.stream}_{found.partition}",
                               lambda _: planned_ms, partial(query_id, self.spark, root))
            sink.write(self.spark.createDataFrame([found.dead_letter()], REJECTED_SCHEMA), found.offset)
        start[topic][str(found.partition)] = found.offset + 1
        _rewrite(self.spark, start_path, start_head, start)
        log.error("query %s: skipped %s, which Spark's Kafka source cannot read (timestamp %d ms)%s", name, where,
                  found.timestamp_ms, ": dead-lettered as " + Reason.UNREADABLE_RECORD if self.dead_letters else "")
        return True
