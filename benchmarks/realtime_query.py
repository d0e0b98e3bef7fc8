"""The query `benchmarks.realtime` runs, in PySpark 4.3's own virtualenv: the job's parse, deduplication and windows
(from `src/`), windows to a Kafka topic as JSON, under the real-time or the micro-batch trigger.

    python realtime_query.py BOOTSTRAP TOPIC OUTPUT_TOPIC CHECKPOINT realtime|microbatch BUFFER_WAIT_MS
"""

from __future__ import annotations

import sys

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from streamdash.config import Aggregation, Contract, Job, KafkaSource, Validation, default_of
from streamdash.events import DEDUPLICATION_KEY
from streamdash.session import PARSE_SETTINGS
from streamdash.sources import kafka
from streamdash.transforms.aggregate import windowed_aggregates
from streamdash.transforms.parse import parse_events


def main(bootstrap: str, topic: str, output_topic: str, checkpoint: str, mode: str, buffer_wait_ms: str) -> None:
    # Real-time mode runs every stage's tasks at once: 4 source partitions + 2 shuffles of one partition each.
    spark = (SparkSession.builder.master("local[8]").appName(f"realtime_{mode}")
             .config("spark.sql.shuffle.partitions", "1").config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.constraintPropagation.enabled", "false")
             .config("spark.sql.codegen.hugeMethodLimit", "8000")
             # How long a pipelined shuffle holds a partly filled buffer before sending it on.
             .config("spark.shuffle.streaming.networkBufferMaxWaitTimeMs", buffer_wait_ms)
             .config("spark.sql.streaming.stateStore.providerClass",
                     "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider")
             .config(map=PARSE_SETTINGS).getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    raw = kafka.read_stream(spark, KafkaSource(bootstrap_servers=bootstrap, topic=topic, starting_offsets="earliest"))
    contract, aggregation = Contract(), Aggregation()
    events = parse_events(raw, Validation(), contract).where(F.col("error").isNull())
    # Real-time mode has no dropDuplicatesWithinWatermark before Spark 5.0; the key holds the event time, so the
    # watermark evicts alike.
    unique = events.withWatermark("event_time", aggregation.watermark).dropDuplicates(list(DEDUPLICATION_KEY))
    windows = windowed_aggregates(unique, aggregation.window_sizes, aggregation.quantile_sketch_k, contract)
    writer = (windows.select(F.to_json(F.struct("*")).alias("value")).writeStream.format("kafka")
              .option("kafka.bootstrap.servers", bootstrap).option("topic", output_topic)
              .option("checkpointLocation", checkpoint).outputMode("update"))
    if mode == "realtime":
        writer = writer.trigger(realTime="30 seconds")  # a checkpoint every 30 s; records flow through at once
    else:
        writer = writer.trigger(processingTime=default_of(Job, "trigger_interval"))
    writer.start().awaitTermination()


if __name__ == "__main__":
    main(*sys.argv[1:7])
