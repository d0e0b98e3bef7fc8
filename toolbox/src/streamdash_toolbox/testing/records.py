"""Literal Kafka records as the source reads them, of the simulator's payload, for tests of the transforms."""

from __future__ import annotations

import datetime as dt
import json

from streamdash.columns import HEADERS_TYPE
from streamdash.sources.kafka import LOG_APPEND_TIME

RAW_SCHEMA = ("key string, value binary, topic string, partition int, offset long, kafka_timestamp timestamp, "
              f"kafka_timestamp_type int, headers {HEADERS_TYPE}")
T0 = dt.datetime(2026, 11, 28, 12, 0, 0)
GOOD = {"schemaVersion": 1, "deviceId": "dev-1", "site": "s1", "deviceType": "thermostat",
        "eventTime": "2026-11-28T13:00:00.250+01:00", "seq": 1,
        "measurements": {"temperature": 21.5, "humidity": 40, "pressure": 1013.25, "battery": 0.9}}


def raw(spark, *payloads: str | bytes, timestamp: dt.datetime = T0, timestamp_type: int = LOG_APPEND_TIME,
        headers: list[list[tuple[str, bytes]]] | None = None, keys: list[str | None] | None = None):
    """Records as the Kafka source reads them; by default appended by the broker at T0 (as Event Hubs stamps them),
    without key or headers (`headers`, `keys`: one list per record)."""
    rows = [(keys[offset] if keys else None, p if isinstance(p, bytes) else p.encode(), "telemetry", 0, offset,
             timestamp, timestamp_type, headers[offset] if headers else None)
            for offset, p in enumerate(payloads)]
    return spark.createDataFrame(rows, RAW_SCHEMA)


def with_(**changes) -> str:
    """`GOOD` with top-level fields changed (`...` removes one), as JSON."""
    return changed(GOOD, **changes)


def changed(payload: dict, **changes) -> str:
    """`payload` with top-level fields changed (`...` removes one), as JSON."""
    event = json.loads(json.dumps(payload))
    for key, value in changes.items():
        if value is ...:
            del event[key]
        else:
            event[key] = value
    return json.dumps(event)
