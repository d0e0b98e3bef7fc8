"""Read telemetry from Apache Kafka, or from Azure Event Hubs through its Kafka endpoint.

Event Hubs: SASL_SSL with mechanism PLAIN, user name `$ConnectionString`, password the connection string,
and Microsoft's recommended client timeouts. On Databricks the Kafka client is shaded, so the login module
needs the `kafkashaded.` prefix; it is chosen from `DATABRICKS_RUNTIME_VERSION`.
"""

from __future__ import annotations

import os

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streamdash.columns import HEADERS_TYPE
from streamdash.config import KafkaSource

# Kafka's record timestamp types (the source's `timestampType`): the producer's clock, or the broker's at append.
CREATE_TIME, LOG_APPEND_TIME = 0, 1
PLAIN_LOGIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
EVENTHUBS_CLIENT_SETTINGS = {
    "kafka.request.timeout.ms": "60000",
    "kafka.session.timeout.ms": "30000",
    "kafka.metadata.max.age.ms": "180000",
    "kafka.connections.max.idle.ms": "180000",
}


def on_databricks() -> bool:
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def sasl_jaas_config(connection_string: str, shaded: bool) -> str:
    escaped = connection_string.replace("\\", "\\\\").replace('"', '\\"')
    prefix = "kafkashaded." if shaded else ""
    return f'{prefix}{PLAIN_LOGIN_MODULE} required username="$ConnectionString" password="{escaped}";'


def kafka_options(source: KafkaSource, shaded: bool | None = None) -> dict[str, str]:
    """Spark Kafka source options for `source` (the connection string is in them: never log the result)."""
    options = {
        "kafka.bootstrap.servers": source.bootstrap_servers,
        "subscribe": source.topic,
        "startingOffsets": source.starting_offsets,
        "failOnDataLoss": str(source.fail_on_data_loss).lower(),
    }
    if source.max_offsets_per_trigger:
        options["maxOffsetsPerTrigger"] = str(source.max_offsets_per_trigger)
    if source.consumer_group:
        options["kafka.group.id"] = source.consumer_group
    if source.security == "eventhubs":
        assert source.connection_string is not None  # the config validator guarantees it
        options |= {
            "kafka.security.protocol": "SASL_SSL",
            "kafka.sasl.mechanism": "PLAIN",
            "kafka.sasl.jaas.config": sasl_jaas_config(source.connection_string.get_secret_value(),
                                                       on_databricks() if shaded is None else shaded),
            **EVENTHUBS_CLIENT_SETTINGS,
        }
        if source.ca_file:
            options |= {"kafka.ssl.truststore.type": "PEM", "kafka.ssl.truststore.location": source.ca_file}
    return options


def read_stream(spark: SparkSession, source: KafkaSource, headers: bool = False) -> DataFrame:
    """The topic as raw records (`columns.RAW_COLUMNS`): key (a string: devices key by their id), value (binary), topic,
    partition, offset, kafka_timestamp, kafka_timestamp_type (`CREATE_TIME` or `LOG_APPEND_TIME`) and, with
    `headers` (a contract that reads one), the record's headers (else null: reading them costs every record)."""
    options = kafka_options(source) | ({"includeHeaders": "true"} if headers else {})
    return _raw_columns(spark.readStream.format("kafka").options(**options).load(), headers)


def read_batch(spark: SparkSession, source: KafkaSource, headers: bool = False) -> DataFrame:
    """What the topic holds now, from `starting_offsets` to the latest offsets, as a batch (for notebooks):
    the same raw columns as `read_stream`."""
    options = {key: value for key, value in kafka_options(source).items() if key != "maxOffsetsPerTrigger"}
    options |= {"includeHeaders": "true"} if headers else {}
    return _raw_columns(spark.read.format("kafka").options(**options, endingOffsets="latest").load(), headers)


def _raw_columns(records: DataFrame, headers: bool) -> DataFrame:
    return records.select(F.col("key").cast("string").alias("key"), "value", "topic", "partition", "offset",
                          F.col("timestamp").alias("kafka_timestamp"),
                          F.col("timestampType").alias("kafka_timestamp_type"),
                          (F.col("headers") if headers else F.lit(None).cast(HEADERS_TYPE)).alias("headers"))
