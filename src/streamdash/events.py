"""The telemetry event contract (schemaVersion 1) and the reasons an event is dead-lettered.

    {"schemaVersion": 1, "deviceId": "dev-0001", "site": "site-01", "deviceType": "thermostat",
     "eventTime": "2026-11-28T12:00:00.123+00:00",   # or epoch milliseconds: 1795867200123
     "seq": 42,                                       # per-device sequence number
     "measurements": {"temperature": 21.5, "humidity": 40.1, "pressure": 1013.2, "battery": 0.93}}

Required: schemaVersion, deviceId, site, eventTime, seq, and at least one measurement. deviceType defaults
to "unknown"; a measurement may be null or absent (sensor missing). Extra fields anywhere are ignored.
"""

SCHEMA_VERSION = 1
MEASUREMENTS = ("temperature", "humidity", "pressure", "battery")
UNKNOWN_DEVICE_TYPE = "unknown"


class Reason:
    """Why an event went to the dead-letter sink (the `reason` tag and column)."""

    OVERSIZE = "oversize"
    MALFORMED_JSON = "malformed_json"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    BAD_EVENT_TIME = "bad_event_time"
    INVALID_IDENTIFIER = "invalid_identifier"
    NON_FINITE_VALUE = "non_finite_value"

    ALL = (OVERSIZE, MALFORMED_JSON, UNSUPPORTED_SCHEMA_VERSION, MISSING_FIELD, WRONG_TYPE, BAD_EVENT_TIME,
           INVALID_IDENTIFIER, NON_FINITE_VALUE)
