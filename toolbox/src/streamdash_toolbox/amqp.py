"""Header values as Event Hubs' Kafka endpoint delivers the properties of an AMQP sender (IoT Hub, the Azure SDKs):
each value's AMQP encoding, made by the Azure SDK's own encoder (azure-eventhub's pyamqp, pinned: the module is
private to it)."""

from __future__ import annotations

import datetime as dt

from azure.eventhub._pyamqp import _encode

# The properties IoT Hub sets on every message it routes (besides the devices' application properties).
DEVICE_ID, ENQUEUED_TIME, MESSAGE_SOURCE = "iothub-connection-device-id", "iothub-enqueuedtime", "iothub-message-source"


def encoded(value: object, amqp_type: str | None = None, smallest: bool = True) -> bytes:
    """`value`'s AMQP encoding: as `amqp_type` ("long", "timestamp", "symbol", ... : pyamqp's `encode_<type>`), else
    as the SDK picks for its Python type; `smallest`: the shortest encoding the type has (the SDK's default)."""
    output = bytearray()
    if amqp_type is None:
        _encode.encode_unknown(output, value)
    else:
        getattr(_encode, f"encode_{amqp_type}")(output, value, use_smallest=smallest)
    return bytes(output)


def iothub_headers(device_id: str, enqueued: dt.datetime, properties: dict[str, object]) -> list[tuple[str, bytes]]:
    """A message's headers as IoT Hub routes it through Event Hubs: its system properties, then the device's
    application properties (strings from MQTT devices, any AMQP value from AMQP ones)."""
    return [(DEVICE_ID, encoded(device_id)), (ENQUEUED_TIME, encoded(enqueued, "timestamp")),
            (MESSAGE_SOURCE, encoded("Telemetry")),
            *((name, encoded(value)) for name, value in properties.items())]
