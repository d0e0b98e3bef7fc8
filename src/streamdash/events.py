"""What makes a record an event, and the reasons an event is dead-lettered.

Where each field is in a payload is configuration: the `[contract]` section (`config.Contract`), whose default is
the simulator's nested payload (schemaVersion 1):

    {"schemaVersion": 1, "deviceId": "dev-0001", "site": "site-01", "deviceType": "thermostat",
     "eventTime": "2026-11-28T12:00:00.123+00:00",   # or epoch milliseconds: 1795867200123
     "seq": 42,                                       # per-device sequence number
     "measurements": {"temperature": 21.5, "humidity": 40.1, "pressure": 1013.2, "battery": 0.93}}

Required: the device id, the site, the event time, the sequence and the schema version when the contract names
them, and at least one measurement. The device type defaults to `contract.default_device_type`; a measurement may
be null or absent (sensor missing). Extra fields anywhere are ignored.

The event time must lie within `validation.max_event_time_ahead` after and `validation.max_event_time_behind`
before a clock no device controls (`transforms.parse.reference_time`), and between 1678-01-01 and 2262-01-01
(what InfluxDB can store).

Identifiers (device id, site, device type, tag values) must be 1 to `validation.max_identifier_length`
characters, not only whitespace, without control characters, and without a backslash at the end or before `,`
`=` or space (line protocol could not tell such a backslash from an escape).
"""

# Two records are the same event (a re-delivery) when these are equal. The event time is part of it: a device that
# restarts its sequence (a reboot) sends the same seq again at another time, and is never its own duplicate.
DEDUPLICATION_KEY = ("device_id", "seq", "event_time")

# Java- and Python-compatible: used by Spark's rlike in the parser and by the line-protocol writer.
UNREPRESENTABLE_IDENTIFIER = r"[\x00-\x1f\x7f]|\\$|\\[,= ]"
# Java regex (Spark's rlike): only whitespace, Unicode spaces included.
BLANK_IDENTIFIER = r"(?U)^\s*$"

# InfluxDB stores nanoseconds since 1970 in a signed 64-bit integer (1677-09-21 to 2262-04-11). Event times
# stay within 1678-01-01 and 2262-01-01, so a window start (at most a day earlier) is storable too.
MIN_EVENT_TIME_US = -9_214_560_000_000_000
MAX_EVENT_TIME_US = 9_214_646_400_000_000


class Reason:
    """Why a record went to the dead-letter sink (the `reason` tag and column)."""

    OVERSIZE = "oversize"
    MALFORMED_JSON = "malformed_json"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    MISSING_FIELD = "missing_field"
    UNKNOWN_MEASUREMENT = "unknown_measurement"  # long records: a reading named by no measurement
    WRONG_TYPE = "wrong_type"
    BAD_EVENT_TIME = "bad_event_time"
    EVENT_TIME_OUT_OF_RANGE = "event_time_out_of_range"
    INVALID_IDENTIFIER = "invalid_identifier"
    NON_FINITE_VALUE = "non_finite_value"
    VALUE_OUT_OF_RANGE = "value_out_of_range"  # only for a measurement with a `range` in the contract
    SINK_REJECTED = "sink_rejected"  # a point InfluxDB refused (field-type conflict, retention, size)
    UNREADABLE_RECORD = "unreadable_record"  # a record Spark's Kafka source cannot read (`sources.unreadable`)

    # What the parser checks with any configuration (the simulator's malformed records cover these).
    ALWAYS_CHECKED = (OVERSIZE, MALFORMED_JSON, UNSUPPORTED_SCHEMA_VERSION, MISSING_FIELD, WRONG_TYPE,
                      BAD_EVENT_TIME, EVENT_TIME_OUT_OF_RANGE, INVALID_IDENTIFIER, NON_FINITE_VALUE)
