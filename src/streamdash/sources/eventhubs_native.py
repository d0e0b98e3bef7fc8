"""Legacy: the native azure-eventhubs-spark connector (`com.microsoft.azure:azure-eventhubs-spark_2.12`).

Only for Scala 2.12 runtimes (Databricks 15.4 / 16.4 LTS): the connector is unmaintained since 2.3.22
(2022) and has no Scala 2.13 build, so it cannot run on Spark 4 / Databricks 18. It encrypts the connection
string through the JVM (`EventHubsUtils.encrypt`), which shared access mode and Spark Connect forbid.
Prefer the Kafka endpoint (`streamdash.sources.kafka`). Records are normalised to the same raw columns.
"""

from __future__ import annotations

import json

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streamdash.columns import HEADERS_TYPE
from streamdash.config import EventHubsNativeSource
from streamdash.sources.kafka import LOG_APPEND_TIME


def entity_path(connection_string: str) -> str:
    """The event hub named by `EntityPath=` in a connection string ('' for a namespace-level one)."""
    parts = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    return parts.get("EntityPath", "")


def eventhubs_options(source: EventHubsNativeSource, encrypted_connection_string: str) -> dict[str, str]:
    position = {"offset": "-1" if source.starting_position == "earliest" else "@latest",
                "seqNo": -1, "enqueuedTime": None, "isInclusive": True}
    options = {
        "eventhubs.connectionString": encrypted_connection_string,
        "eventhubs.consumerGroup": source.consumer_group,
        "eventhubs.startingPosition": json.dumps(position),
    }
    if source.max_events_per_trigger:
        options["maxEventsPerTrigger"] = str(source.max_events_per_trigger)
    return options


def read_stream(spark: SparkSession, source: EventHubsNativeSource) -> DataFrame:
    encrypt = spark.sparkContext._jvm.org.apache.spark.eventhubs.EventHubsUtils.encrypt
    options = eventhubs_options(source, encrypt(source.connection_string.get_secret_value()))
    raw = spark.readStream.format("eventhubs").options(**options).load()
    return raw.select(
        F.col("partitionKey").alias("key"),
        F.col("body").alias("value"),
        F.lit(entity_path(source.connection_string.get_secret_value())).alias("topic"),
        F.col("partition").cast("int").alias("partition"),
        F.col("sequenceNumber").cast("long").alias("offset"),
        F.col("enqueuedTime").alias("kafka_timestamp"),
        F.lit(LOG_APPEND_TIME).alias("kafka_timestamp_type"),  # the time Event Hubs enqueued the event
        F.lit(None).cast(HEADERS_TYPE).alias("headers"),  # properties are a map of strings here: not read
    )
