"""Parse raw records into typed events and decide, per record, whether it is valid or why not.

One `from_json` per record reads the top-level fields as VARIANT values, so every field's JSON type is
checked exactly (a number where a string belongs is `wrong_type`, not silently coerced) at close to the
cost of a plain typed `from_json`. Integers are accepted where floats are expected.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from streamdash.config import Validation, duration_seconds
from streamdash.events import (
    BLANK_IDENTIFIER,
    DEDUPLICATION_KEY,
    MAX_EVENT_TIME_US,
    MEASUREMENTS,
    MIN_EVENT_TIME_US,
    SCHEMA_VERSION,
    UNKNOWN_DEVICE_TYPE,
    UNREPRESENTABLE_IDENTIFIER,
    Reason,
)
from streamdash.sources.kafka import LOG_APPEND_TIME

# ISO-8601 with a date, a time and an explicit offset (Z or +hh:mm); epoch milliseconds are integers.
_ISO_WITH_OFFSET = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$"
_FIELDS = ("schemaVersion", "deviceId", "site", "deviceType", "eventTime", "seq", "measurements")
_REQUIRED = ("schemaVersion", "deviceId", "site", "eventTime", "seq", "measurements")
_CORRUPT = "_corrupt_record"
_JSON_SCHEMA = ", ".join([*(f"{name} variant" for name in _FIELDS), f"{_CORRUPT} string"])
# Strict JSON: no single quotes, no bare NaN/Infinity. A record that is not a JSON object fills _corrupt_record.
_JSON_OPTIONS = {"columnNameOfCorruptRecord": _CORRUPT, "allowSingleQuotes": "false",
                 "allowNonNumericNumbers": "false"}
_BAD_IDENTIFIER = f"{BLANK_IDENTIFIER}|{UNREPRESENTABLE_IDENTIFIER}"


def _is_number(json_type: Column) -> Column:
    return (json_type == "BIGINT") | (json_type == "DOUBLE") | json_type.startswith("DECIMAL")


def _is_absent(json_type: Column) -> Column:
    return json_type.isNull() | (json_type == "VOID")


def _any(conditions: list[Column]) -> Column:
    return reduce(lambda a, b: a | b, conditions)


def _evaluated_once(column: Column) -> Column:
    """`column`, kept from being copied into a later filter. Spark pushes a filter below the projection that
    computes its columns and inlines each reference there (the JSON parse would run dozens of times per record);
    a non-deterministic factor keeps the filter above the projection."""
    return F.when(F.spark_partition_id() >= 0, column)


EVENT_TIME_ADJUSTED = "event_time_adjusted"  # an early event taken at the reference time (`early_events = "adjust"`)


def reference_time() -> Column:
    """The clock a record's event time is judged against, which no device controls: when the broker appended
    the record, where the broker stamps it (Event Hubs; Kafka topics with `message.timestamp.type=LogAppendTime`),
    and never later than the micro-batch's own time (`current_timestamp()` in a stream: Spark keeps it in the
    offset log, so a replayed batch judges alike). A producer's own timestamp (Kafka's default CreateTime) is the
    device's clock, so it is not used. The broker's and the job's clocks are assumed to be NTP-synchronised."""
    append_time = F.when(F.col("kafka_timestamp_type") == LOG_APPEND_TIME, F.col("kafka_timestamp"))
    return F.least(F.current_timestamp(), append_time)  # least() skips the null of a CreateTime record


def parse_events(raw: DataFrame, validation: Validation) -> DataFrame:
    """Raw records (see `sources.kafka.RAW_COLUMNS`) -> the same columns plus `payload`, the typed event
    columns (`EVENT_COLUMNS`), `error` (null for a valid event, otherwise one of `events.Reason`) and
    `EVENT_TIME_ADJUSTED`.

    An event time more than `validation.max_event_time_ahead` after `reference_time()` is a dead letter, or with
    `early_events = "adjust"` is taken as the reference time (and flagged); so no device's clock can move the
    watermark further than that ahead of real time."""
    json = F.col("_json")
    measurements = json["measurements"]
    field_types = {name: F.schema_of_variant(json[name]) for name in _FIELDS}
    measurement_types = {m: F.schema_of_variant(F.try_variant_get(measurements, f"$.{m}", "variant"))
                         for m in MEASUREMENTS}
    event_time_text = F.try_variant_get(json["eventTime"], "$", "string")
    # Microseconds since 1970, null when eventTime is not a time at all. try_* never overflow, whatever the input.
    event_time_us = (
        F.when(field_types["eventTime"] == "BIGINT",
               F.try_multiply(F.try_variant_get(json["eventTime"], "$", "long"), F.lit(1000)))
        .when(event_time_text.rlike(_ISO_WITH_OFFSET), F.unix_micros(event_time_text.try_cast("timestamp")))
    )
    parsed = (
        raw.withColumn("payload", F.col("value").cast("string"))
        .withColumn("_json", F.from_json("payload", _JSON_SCHEMA, _JSON_OPTIONS))
        .select(
            *raw.columns, "payload",
            (json.isNull() | json[_CORRUPT].isNotNull()).alias("_malformed"),
            F.try_variant_get(json["schemaVersion"], "$", "long").alias("schema_version"),
            F.try_variant_get(json["deviceId"], "$", "string").alias("device_id"),
            F.try_variant_get(json["site"], "$", "string").alias("site"),
            F.coalesce(F.try_variant_get(json["deviceType"], "$", "string"), F.lit(UNKNOWN_DEVICE_TYPE))
            .alias("device_type"),
            event_time_us.alias("_event_time_us"),
            F.try_variant_get(json["seq"], "$", "long").alias("seq"),
            *[F.try_variant_get(measurements, f"$.{m}", "double").alias(m) for m in MEASUREMENTS],
            *[t.alias(f"_type_{name}") for name, t in {**field_types, **measurement_types}.items()],
        )
    )
    t = {name: F.col(f"_type_{name}") for name in [*field_types, *measurement_types]}
    missing_field = (_any([_is_absent(t[name]) for name in _REQUIRED])
                     | reduce(lambda a, b: a & b, [_is_absent(t[m]) for m in MEASUREMENTS]))
    wrong_type = (
        (t["schemaVersion"] != "BIGINT") | (t["deviceId"] != "STRING") | (t["site"] != "STRING")
        | (~_is_absent(t["deviceType"]) & (t["deviceType"] != "STRING"))
        | ((t["eventTime"] != "STRING") & (t["eventTime"] != "BIGINT")) | (t["seq"] != "BIGINT")
        | ~t["measurements"].startswith("OBJECT")
        | _any([~_is_absent(t[m]) & ~_is_number(t[m]) for m in MEASUREMENTS])
    )

    def bad_identifier(column: str) -> Column:
        value = F.col(column)
        return (F.length(value) > validation.max_identifier_length) | value.rlike(_BAD_IDENTIFIER)

    event_us = F.col("_event_time_us")
    ahead_us = int(duration_seconds(validation.max_event_time_ahead) * 1_000_000)
    behind_us = int(duration_seconds(validation.max_event_time_behind) * 1_000_000)
    reference_us = F.unix_micros(reference_time())
    # Null (out of range) when the subtraction itself would overflow: the reference cannot be that far off.
    offset_us = F.try_subtract(event_us, reference_us)
    storable = event_us.between(MIN_EVENT_TIME_US, MAX_EVENT_TIME_US)
    event_time_in_range = storable & offset_us.between(-behind_us, ahead_us)
    adjusted = (storable & (offset_us > ahead_us)) if validation.early_events == "adjust" else F.lit(False)
    out_of_range = [(F.col(m) < low) | (F.col(m) > high) for m, (low, high) in validation.ranges.items()]
    non_finite = _any([F.col(m).isin(float("inf"), float("-inf")) | F.isnan(F.col(m)) for m in MEASUREMENTS])
    checks = [
        (F.octet_length("value") > validation.max_event_bytes, Reason.OVERSIZE),
        (F.col("_malformed"), Reason.MALFORMED_JSON),
        (missing_field, Reason.MISSING_FIELD),
        (wrong_type, Reason.WRONG_TYPE),
        (F.col("schema_version") != SCHEMA_VERSION, Reason.UNSUPPORTED_SCHEMA_VERSION),
        (event_us.isNull() & (t["eventTime"] != "BIGINT"), Reason.BAD_EVENT_TIME),
        (~F.coalesce(event_time_in_range | adjusted, F.lit(False)), Reason.EVENT_TIME_OUT_OF_RANGE),
        (bad_identifier("device_id") | bad_identifier("site") | bad_identifier("device_type"),
         Reason.INVALID_IDENTIFIER),
        (non_finite, Reason.NON_FINITE_VALUE),
    ]
    if out_of_range:  # no clause at all in the hot path unless ranges are configured
        checks.append((_any(out_of_range), Reason.VALUE_OUT_OF_RANGE))
    error = F.coalesce(*[F.when(failed, F.lit(reason)) for failed, reason in checks])
    return (parsed.withColumn("error", _evaluated_once(error))
            .withColumn("event_time", F.when(event_time_in_range, F.timestamp_micros(event_us))
                        .when(adjusted, F.timestamp_micros(reference_us)))
            .withColumn(EVENT_TIME_ADJUSTED, F.coalesce(adjusted & F.col("error").isNull(), F.lit(False)))
            .drop("_malformed", "_event_time_us", *[f"_type_{name}" for name in [*field_types, *measurement_types]]))


EVENT_COLUMNS = ("device_id", "site", "device_type", "event_time", "seq", *MEASUREMENTS)


def valid_events(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("error").isNull()).select(*EVENT_COLUMNS)


DEAD_LETTER_COLUMNS = ("payload", "topic", "partition", "offset", "kafka_timestamp", "reason")
DEAD_LETTER = "dead_letter"  # `split_once`'s struct of a dead letter's columns


def _dead_letter_columns() -> list[Column]:
    """What is needed to find and replay an invalid record: raw payload, position, reason (`DEAD_LETTER_COLUMNS`)."""
    return [*map(F.col, DEAD_LETTER_COLUMNS[:-1]), F.col("error").alias("reason")]


def dead_letters(parsed: DataFrame) -> DataFrame:
    """Invalid records, as `DEAD_LETTER_COLUMNS`."""
    return parsed.where(F.col("error").isNotNull()).select(*_dead_letter_columns())


def split_once(parsed: DataFrame) -> tuple[DataFrame, DataFrame]:
    """`valid_events` and the dead letters of a stream, from one read and one parse of each record.

    Both come out of one shuffle by `DEDUPLICATION_KEY`, which Spark runs once for both (a reused exchange). For
    that the two must ask the same of it: each filter stays above it (`_evaluated_once`), and each branch keeps
    every column it carries, or Spark would prune them below it differently and read and parse the topic twice.
    So the dead letters have two columns: `DEAD_LETTER` (`DEAD_LETTER_COLUMNS`) and `parsed` (`EVENT_COLUMNS`,
    whatever the parse made of the record). (Spark then shuffles the valid events once more, by the same key, for
    the deduplication: the watermark between them does not pass its input's partitioning on.)
    """
    letter = F.when(F.col("error").isNotNull(), F.struct(*_dead_letter_columns()))
    shuffled = parsed.select(*EVENT_COLUMNS, letter.alias(DEAD_LETTER)).repartition(*DEDUPLICATION_KEY)
    is_letter = F.col(DEAD_LETTER).isNotNull()
    events = shuffled.where(_evaluated_once(~is_letter)).select(*EVENT_COLUMNS)
    letters = shuffled.where(_evaluated_once(is_letter)).select(DEAD_LETTER, F.struct(*EVENT_COLUMNS).alias("parsed"))
    return events, letters
