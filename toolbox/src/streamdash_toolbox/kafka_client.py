"""confluent-kafka client settings for plain Kafka or for the Event Hubs Kafka endpoint."""

from __future__ import annotations

# Microsoft's recommended settings for Event Hubs' Kafka endpoint (librdkafka names).
EVENTHUBS_PRODUCER_SETTINGS = {
    "request.timeout.ms": 60000,
    "metadata.max.age.ms": 180000,
    "connections.max.idle.ms": 180000,
    "message.max.bytes": 1000000,  # under Event Hubs' 1,046,528-byte request ceiling
}


# Event Hubs' Standard tier refuses compressed produce requests; Premium and Dedicated take gzip only.
EVENTHUBS_COMPRESSIONS = ("none", "gzip")


def client_config(bootstrap_servers: str, eventhubs_connection_string: str | None = None,
                  ca_file: str | None = None, compression: str | None = None) -> dict:
    """With a connection string: SASL_SSL/PLAIN as `$ConnectionString`, trusting `ca_file` if given, and no
    compression unless `compression` asks for it (gzip, on Premium or Dedicated). On plain Kafka the producer is
    idempotent, so a retry after a broker restart never writes a record twice, and compresses with lz4 by default."""
    config: dict = {"bootstrap.servers": bootstrap_servers}
    if not eventhubs_connection_string:
        config |= {"enable.idempotence": True, "compression.type": compression or "lz4"}
    else:
        if (compression or "none") not in EVENTHUBS_COMPRESSIONS:
            raise ValueError(f"Event Hubs takes compression {' or '.join(EVENTHUBS_COMPRESSIONS)} only "
                             "(none on the Standard tier)")
        config["compression.type"] = compression or "none"
        config |= {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                   "sasl.username": "$ConnectionString", "sasl.password": eventhubs_connection_string,
                   **EVENTHUBS_PRODUCER_SETTINGS}
        if ca_file:
            config["ssl.ca.location"] = ca_file
    return config
