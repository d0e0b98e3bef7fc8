"""Parse raw records into typed events and decide, per record, whether it is valid or why not.

JSON is parsed into a VARIANT, so every field's JSON type is checked exactly (a number where a string
belongs is `wrong_type`, not silently coerced). Integers are accepted where floats are expected.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from streamdash.config import Validation
from streamdash.events import MEASUREMENTS, SCHEMA_VERSION, UNKNOWN_DEVICE_TYPE, Reason
from streamdash.sinks.line_protocol import UNREPRESENTABLE

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
    event_time = (
        F.when(types["eventTime"] == "BIGINT", F.timestamp_millis(F.try_variant_get(doc, "$.eventTime", "long")))
        .when(event_time_text.rlike(_ISO_WITH_OFFSET), event_time_text.try_cast("timestamp"))
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
            event_time.alias("event_time"),
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
        return ((F.length(value) == 0) | (F.length(value) > validation.max_identifier_length)
                | value.rlike(UNREPRESENTABLE))

    non_finite = reduce(lambda a, b: a | b, [F.col(m).isin(float("inf"), float("-inf")) | F.isnan(F.col(m))
                                            for m in MEASUREMENTS])
    error = (
        F.when(F.octet_length("value") > validation.max_event_bytes, F.lit(Reason.OVERSIZE))
        .when(F.col("_doc").isNull() | ~F.col("_is_object"), F.lit(Reason.MALFORMED_JSON))
        .when(missing_field, F.lit(Reason.MISSING_FIELD))
        .when(wrong_type, F.lit(Reason.WRONG_TYPE))
        .when(F.col("schema_version") != SCHEMA_VERSION, F.lit(Reason.UNSUPPORTED_SCHEMA_VERSION))
        .when(F.col("event_time").isNull(), F.lit(Reason.BAD_EVENT_TIME))
        .when(bad_identifier("device_id") | bad_identifier("site") | bad_identifier("device_type"),
              F.lit(Reason.INVALID_IDENTIFIER))
        .when(F.coalesce(non_finite, F.lit(False)), F.lit(Reason.NON_FINITE_VALUE))
    )
    return parsed.withColumn("error", error).drop(
        "_doc", "_is_object", *[f"_type_{name}" for name in [*types, *measurement_types]])


EVENT_COLUMNS = ("device_id", "site", "device_type", "event_time", "seq", *MEASUREMENTS)


def valid_events(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("error").isNull()).select(*EVENT_COLUMNS)


def dead_letters(parsed: DataFrame) -> DataFrame:
    """Invalid records with what is needed to find and replay them: raw payload, position, reason."""
    return parsed.where(F.col("error").isNotNull()).select(
        "payload", "topic", "partition", "offset", "kafka_timestamp", F.col("error").alias("reason"))
