"""Parse raw records into typed events and decide, per record, whether it is valid or why not.

JSON is parsed into a VARIANT, so every field's JSON type is checked exactly (a number where a string
belongs is `wrong_type`, not silently coerced). Integers are accepted where floats are expected.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from streamdash.config import Validation, duration_seconds
from streamdash.events import (
    BLANK_IDENTIFIER,
    MAX_EVENT_TIME_US,
    MEASUREMENTS,
    MIN_EVENT_TIME_US,
    SCHEMA_VERSION,
    UNKNOWN_DEVICE_TYPE,
    UNREPRESENTABLE_IDENTIFIER,
    Reason,
)

# ISO-8601 with a date, a time and an explicit offset (Z or +hh:mm); epoch milliseconds are integers.
_ISO_WITH_OFFSET = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$"


def _json_type(variant: Column, path: str) -> Column:
    """The JSON type at `path`: STRING, BIGINT, DECIMAL(p,s), DOUBLE, BOOLEAN, OBJECT<..>, VOID (null) or NULL."""
    return F.schema_of_variant(F.try_variant_get(variant, path, "variant"))


def _is_number(json_type: Column) -> Column:
    return (json_type == "BIGINT") | (json_type == "DOUBLE") | json_type.startswith("DECIMAL")


def _is_absent(json_type: Column) -> Column:
    return json_type.isNull() | (json_type == "VOID")


def parse_events(raw: DataFrame, validation: Validation) -> DataFrame:
    """Raw records (see `sources.kafka.RAW_COLUMNS`) -> the same columns plus typed event columns and `error`.

    `error` is null for a valid event and otherwise one of `events.Reason`.
    """
    doc = F.col("_doc")
    types = {name: _json_type(doc, f"$.{name}") for name in ("schemaVersion", "deviceId", "site", "deviceType",
                                                            "eventTime", "seq", "measurements")}
    measurement_types = {m: _json_type(doc, f"$.measurements.{m}") for m in MEASUREMENTS}
    event_time_text = F.try_variant_get(doc, "$.eventTime", "string")
    # Microseconds since 1970, null when eventTime is not a time at all. try_* never overflow, whatever the input.
    event_time_us = (
        F.when(types["eventTime"] == "BIGINT", F.try_multiply(F.try_variant_get(doc, "$.eventTime", "long"),
                                                              F.lit(1000)))
        .when(event_time_text.rlike(_ISO_WITH_OFFSET), F.unix_micros(event_time_text.try_cast("timestamp")))
    )
    parsed = (
        raw.withColumn("payload", F.col("value").cast("string"))
        .withColumn("_doc", F.try_parse_json("payload"))
        .select(
            *raw.columns, "payload", "_doc",
            F.try_variant_get(doc, "$.schemaVersion", "long").alias("schema_version"),
            F.try_variant_get(doc, "$.deviceId", "string").alias("device_id"),
            F.try_variant_get(doc, "$.site", "string").alias("site"),
            F.coalesce(F.try_variant_get(doc, "$.deviceType", "string"), F.lit(UNKNOWN_DEVICE_TYPE))
            .alias("device_type"),
            event_time_us.alias("_event_time_us"),
            F.try_variant_get(doc, "$.seq", "long").alias("seq"),
            *[F.try_variant_get(doc, f"$.measurements.{m}", "double").alias(m) for m in MEASUREMENTS],
            F.schema_of_variant(doc).startswith("OBJECT").alias("_is_object"),
            *[t.alias(f"_type_{name}") for name, t in {**types, **measurement_types}.items()],
        )
    )
    t = {name: F.col(f"_type_{name}") for name in [*types, *measurement_types]}
    required = ("schemaVersion", "deviceId", "site", "eventTime", "seq", "measurements")
    missing_field = reduce(lambda a, b: a | b, [_is_absent(t[name]) for name in required]) | reduce(
        lambda a, b: a & b, [_is_absent(t[m]) for m in MEASUREMENTS])
    wrong_type = (
        (t["schemaVersion"] != "BIGINT") | (t["deviceId"] != "STRING") | (t["site"] != "STRING")
        | (~_is_absent(t["deviceType"]) & (t["deviceType"] != "STRING"))
        | ((t["eventTime"] != "STRING") & (t["eventTime"] != "BIGINT")) | (t["seq"] != "BIGINT")
        | ~t["measurements"].startswith("OBJECT")
        | reduce(lambda a, b: a | b, [~_is_absent(t[m]) & ~_is_number(t[m]) for m in MEASUREMENTS])
    )

    def bad_identifier(column: str) -> Column:
        value = F.col(column)
        return (value.rlike(BLANK_IDENTIFIER) | (F.length(value) > validation.max_identifier_length)
                | value.rlike(UNREPRESENTABLE_IDENTIFIER))

    event_us = F.col("_event_time_us")
    ahead_us = int(duration_seconds(validation.max_event_time_ahead) * 1_000_000)
    behind_us = int(duration_seconds(validation.max_event_time_behind) * 1_000_000)
    # Null (out of range) when the subtraction itself would overflow: a broker timestamp cannot be that far off.
    offset_from_broker_us = F.try_subtract(event_us, F.unix_micros("kafka_timestamp"))
    event_time_in_range = (event_us.between(MIN_EVENT_TIME_US, MAX_EVENT_TIME_US)
                           & offset_from_broker_us.between(-behind_us, ahead_us))
    out_of_range = [(F.col(m) < low) | (F.col(m) > high) for m, (low, high) in validation.ranges.items()]

    non_finite = reduce(lambda a, b: a | b, [F.col(m).isin(float("inf"), float("-inf")) | F.isnan(F.col(m))
                                            for m in MEASUREMENTS])
    error = (
        F.when(F.octet_length("value") > validation.max_event_bytes, F.lit(Reason.OVERSIZE))
        .when(F.col("_doc").isNull() | ~F.col("_is_object"), F.lit(Reason.MALFORMED_JSON))
        .when(missing_field, F.lit(Reason.MISSING_FIELD))
        .when(wrong_type, F.lit(Reason.WRONG_TYPE))
        .when(F.col("schema_version") != SCHEMA_VERSION, F.lit(Reason.UNSUPPORTED_SCHEMA_VERSION))
        .when(event_us.isNull() & (t["eventTime"] != "BIGINT"), F.lit(Reason.BAD_EVENT_TIME))
        .when(~F.coalesce(event_time_in_range, F.lit(False)), F.lit(Reason.EVENT_TIME_OUT_OF_RANGE))
        .when(bad_identifier("device_id") | bad_identifier("site") | bad_identifier("device_type"),
              F.lit(Reason.INVALID_IDENTIFIER))
        .when(F.coalesce(non_finite, F.lit(False)), F.lit(Reason.NON_FINITE_VALUE))
    )
    if out_of_range:  # no clause at all in the hot path unless ranges are configured
        error = error.when(F.coalesce(reduce(lambda a, b: a | b, out_of_range), F.lit(False)),
                           F.lit(Reason.VALUE_OUT_OF_RANGE))
    return (parsed.withColumn("error", error)
            .withColumn("event_time", F.when(event_time_in_range, F.timestamp_micros(event_us)))
            .drop("_doc", "_is_object", "_event_time_us",
                  *[f"_type_{name}" for name in [*types, *measurement_types]]))


EVENT_COLUMNS = ("device_id", "site", "device_type", "event_time", "seq", *MEASUREMENTS)


def valid_events(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("error").isNull()).select(*EVENT_COLUMNS)


def dead_letters(parsed: DataFrame) -> DataFrame:
    """Invalid records with what is needed to find and replay them: raw payload, position, reason."""
    return parsed.where(F.col("error").isNotNull()).select(
        "payload", "topic", "partition", "offset", "kafka_timestamp", F.col("error").alias("reason"))
