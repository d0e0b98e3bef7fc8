"""The names of the columns the job's DataFrames carry besides the contract's measurements and tags, and of the
InfluxDB keys it writes itself: one place, from which the names no measurement or tag may take are derived.

Spark resolves column and struct field names case-insensitively (`spark.sql.caseSensitive` is off), so a
measurement `Site` is the column `site` to it: `reserved` compares names in lower case.
"""

from __future__ import annotations

# A Kafka record as the source reads it (`sources.kafka`): what the parse starts from.
RAW_COLUMNS = ("key", "value", "topic", "partition", "offset", "kafka_timestamp", "kafka_timestamp_type", "headers")
HEADERS_TYPE = "array<struct<key:string,value:binary>>"  # the Kafka source's, null where a contract reads none
READ_AT = "ingested_at"  # when the job read a record, where it keeps the records (the bronze table's column)
# Where a JSON parse puts a record that is not a JSON object: a payload key of that name (in any case) is refused.
CORRUPT_RECORD = "_corrupt_record"

# The parse's output beside the raw columns (`transforms.parse`).
PAYLOAD, ERROR = "payload", "error"
EVENT_COLUMNS = ("device_id", "site", "device_type", "event_time", "seq")  # then the measurements, then TAGS
TAGS = "tags"  # a struct of the contract's tags
EVENT_TIME_ADJUSTED = "event_time_adjusted"  # an early event taken at the reference time (`early_events = "adjust"`)
READING = "reading_name"  # a one-reading record's measurement name: part of its deduplication key

# The query's output rows (`transforms.batch`) and the handler's pass over them (`sinks.lines`).
DEAD_LETTER, PARSED = "dead_letter", "parsed"
TALLY = "dead_letter_tally"
REASON = "reason"

# A window's row (`transforms.aggregate.windowed_aggregates`), and the grouping columns it is made from.
WINDOW_COLUMNS = ("level", "window", "window_start_ns")
GROUP_COLUMNS = ("count", "newest_event_ns")  # what every group holds besides the contract's statistics
GROUPING_COLUMNS = ("largest_window", "start_us")
GROUP_KEY_PREFIX = "key_"  # a device's keys in a group: key_device_id, key_device_type, key_tags
WINDOW_START = "window_start"  # the gold table's timestamp of a window

# InfluxDB keys the points carry besides the columns above (`sinks.points`).
POINT_KEYS = ("device", "time", "stats_overflowed")

_OWN = (*RAW_COLUMNS, READ_AT, PAYLOAD, ERROR, *EVENT_COLUMNS, TAGS, EVENT_TIME_ADJUSTED, READING, DEAD_LETTER,
        PARSED, TALLY, REASON, *WINDOW_COLUMNS, *GROUP_COLUMNS, *GROUPING_COLUMNS, WINDOW_START, *POINT_KEYS,
        *(f"{GROUP_KEY_PREFIX}{key}" for key in ("device_id", "device_type", TAGS)))
_RESERVED = frozenset(name.lower() for name in _OWN)


def reserved(name: str) -> bool:
    """Whether `name`, in any case, is a column or key of the job's own."""
    return name.lower() in _RESERVED
