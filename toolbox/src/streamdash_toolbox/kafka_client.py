"""confluent-kafka client settings for plain Kafka or for the Event Hubs Kafka endpoint."""

from __future__ import annotations

# Microsoft's recommended settings for Event Hubs' Kafka endpoint (librdkafka names).
EVENTHUBS_PRODUCER_SETTINGS = {
    "request.timeout.ms": 60000,
    "metadata.max.age.ms": 180000,
    "connections.max.idle.ms": 180000,
    "message.max.bytes": 1000000,  # under Event Hubs' 1,046,528-byte request ceiling
}


def client_config(bootstrap_servers: str, eventhubs_connection_string: str | None = None,
                  ca_file: str | None = None) -> dict:
    """With a connection string: SASL_SSL/PLAIN as `$ConnectionString`, trusting `ca_file` if given. On plain
    Kafka the producer is idempotent, so a retry after a broker restart never writes a record twice."""
    config: dict = {"bootstrap.servers": bootstrap_servers}
    if not eventhubs_connection_string:
        config["enable.idempotence"] = True
    else:
        config |= {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                   "sasl.username": "$ConnectionString", "sasl.password": eventhubs_connection_string,
                   **EVENTHUBS_PRODUCER_SETTINGS}
        if ca_file:
            config["ssl.ca.location"] = ca_file
    return config
