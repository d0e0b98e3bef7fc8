"""Parse raw records into typed events as the telemetry contract (`config.Contract`) describes them, and decide, per
record, whether it is valid or why not.

Every field's JSON type is checked exactly: a number where a string belongs is `wrong_type`, not silently coerced;
integers are accepted where floats are expected. Two parses give that at 0.8x the cost of the exact one alone (still
~4x a plain typed `from_json`, which cannot tell `7` from `"7"`; `benchmarks/parse.py`):

- the fast one, for every record: a typed `from_json` of the contract's fields (the event time as a VARIANT, as it
  may be a string or a number). It vouches for a record when it parsed without error (a number field holding
  anything but a number fails it) and no string field's text could be a non-string's JSON (a number, `true`,
  an object): then the typed values are the values and their types are known.
- the exact one, only for the records the fast one cannot vouch for: the top-level keys as VARIANT values, each
  field's JSON type read with `_json_type` and its value with `try_variant_get` (a `Cast` object per value). It
  decides every invalid record.

Both read a key repeated in an object as its last value (`spark.sql.variant.allowDuplicateKeys`, set by the job's
session; the fast parse does so anyway).
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, DoubleType, LongType, StringType, StructField, StructType, VariantType

from streamdash.columns import CORRUPT_RECORD as _CORRUPT
from streamdash.columns import ERROR, EVENT_TIME_ADJUSTED, PAYLOAD, RAW_COLUMNS, READ_AT, READING
from streamdash.config import Contract, Measurement, Validation, duration_seconds, in_body, json_path_segments
from streamdash.events import (
    BLANK_IDENTIFIER,
    MAX_EVENT_TIME_US,
    MIN_EVENT_TIME_US,
    UNREPRESENTABLE_IDENTIFIER,
    Reason,
)
from streamdash.sources.kafka import LOG_APPEND_TIME
from streamdash.transforms import headers

# ISO-8601 with a date, a time and an explicit offset (Z or +hh:mm).
_ISO_WITH_OFFSET = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$"
# Strict JSON: no single quotes, no bare NaN/Infinity. A record that is not a JSON object fills _corrupt_record.
_JSON_OPTIONS = {"columnNameOfCorruptRecord": _CORRUPT, "allowSingleQuotes": "false",
                 "allowNonNumericNumbers": "false"}
_BAD_IDENTIFIER = f"{BLANK_IDENTIFIER}|{UNREPRESENTABLE_IDENTIFIER}"
# A typed parse's text of a string field that could be a non-string's JSON: a number (a double too large is written
# as Infinity), a boolean, an object or an array.
_MAYBE_NOT_A_STRING = r'^([-+0-9{\["]|true$|false$|NaN$|Infinity$)'
# A JSON number's text: what a measurement with `numeric_strings` reads from a string.
_JSON_NUMBER = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$"
# What `schema_of_variant` calls the JSON type a fast-parse type stands for ("": an object).
_VARIANT_TYPE_NAMES = {"long": "BIGINT", "double": "DOUBLE", "string": "STRING", "": "OBJECT"}
# The JSON types (`schema_of_variant`) each event-time format accepts.
_EVENT_TIME_TYPES = {"iso8601": ("STRING",), "epoch_ms": ("BIGINT",), "epoch_s": ("BIGINT", "DOUBLE", "DECIMAL")}


# Long records' roles (`contract.readings`): a record's one reading, or its array of them, by `Readings.paths` field.
_READING_NAME, _READING_VALUE, _READINGS = "reading:name", "reading:value", "readings"
_READING_ROLES = {"name": _READING_NAME, "value": _READING_VALUE, "array": _READINGS}


def _is_number(json_type: Column) -> Column:
    return (json_type == "BIGINT") | (json_type == "DOUBLE") | json_type.startswith("DECIMAL")


def _json_type(value: Column) -> Column:
    """What `schema_of_variant` calls a VARIANT's JSON type (VOID for a JSON null), but "OBJECT" and "ARRAY" for
    any object or array: their keys are never read. Spark 4.1's `schema_of_variant` fails the whole batch on an
    object with a key that holds a lone UTF-16 surrogate escape (`{"\\udfb3": 1, "b": 2}`), which any device can
    send; the casts to an empty struct and to an array of booleans only look at the value's type."""
    return (F.when(F.try_variant_get(value, "$", "struct<>").isNotNull(), F.lit("OBJECT"))
            .when(F.try_variant_get(value, "$", "array<boolean>").isNotNull(), F.lit("ARRAY"))
            .otherwise(F.schema_of_variant(value)))


def _is_absent(json_type: Column) -> Column:
    return json_type.isNull() | (json_type == "VOID")


def _any(conditions: list[Column]) -> Column:
    return reduce(lambda a, b: a | b, conditions, F.lit(False))


def _reading(name: str, measurement: Measurement) -> tuple[Column, Column]:
    """(the measurement as a number, whether its JSON type is one the contract reads as a number) from the parse's
    columns: its JSON type `_type_m:<name>`, the number read as `<name>` and, with an opt-in type, the value itself
    `_variant_m:<name>` (a boolean as 1 or 0, a string holding a JSON number as that number)."""
    json_type, number = F.col(f"_type_m:{name}"), F.col(name)
    accepted, value = _is_number(json_type), number
    variant = F.col(f"_variant_m:{name}")
    if measurement.booleans:
        is_boolean = json_type == "BOOLEAN"
        accepted = accepted | is_boolean
        value = F.when(is_boolean, F.try_variant_get(variant, "$", "boolean").cast("double")).otherwise(value)
    if measurement.numeric_strings:
        text = F.try_variant_get(variant, "$", "string")
        is_number_text = (json_type == "STRING") & F.coalesce(text.rlike(_JSON_NUMBER), F.lit(False))
        accepted = accepted | is_number_text
        value = F.when(is_number_text, text.try_cast("double")).otherwise(value)
    return value, F.coalesce(accepted, F.lit(False))


def _value_checks(contract: Contract) -> tuple[dict[str, Column], dict[str, list[Column]]]:
    """(per measurement, whether its value is kept; per reason a value can fail (wrong_type, non_finite_value,
    value_out_of_range, the last with ranges only), per measurement whether its value fails it). Absent or null
    values fail nothing and are not kept."""
    kept: dict[str, Column] = {}
    failing: dict[str, list[Column]] = {Reason.WRONG_TYPE: [], Reason.NON_FINITE_VALUE: [],
                                        Reason.VALUE_OUT_OF_RANGE: []}
    for name, measurement in contract.measurements.items():
        value, accepted = F.col(name), _reading(name, measurement)[1]
        finite = ~(value.isin(float("inf"), float("-inf")) | F.isnan(value))
        failing[Reason.WRONG_TYPE].append(~_is_absent(F.col(f"_type_m:{name}")) & ~accepted)
        failing[Reason.NON_FINITE_VALUE].append(accepted & ~finite)
        ok = accepted & finite
        if measurement.range:
            in_range = value.between(*measurement.range)
            failing[Reason.VALUE_OUT_OF_RANGE].append(ok & ~in_range)
            ok = ok & in_range
        kept[name] = F.coalesce(ok, F.lit(False))
    return kept, failing


def evaluated_once(column: Column) -> Column:
    """`column`, kept from being copied into a later filter. Spark pushes a filter below the projection that
    computes its columns and inlines each reference there (the JSON parse would run dozens of times per record);
    a non-deterministic factor keeps the filter above the projection."""
    return F.when(F.spark_partition_id() >= 0, column)




def _variant_path(segments: list[str]) -> str:
    return "$" + "".join(f"['{key}']" for key in segments)


def _measurements_of_readings(contract: Contract, name: Column, value: Column, readings: Column) -> dict[str, Column]:
    """Each measurement's value (a VARIANT, null where the record has no reading of it), and `_unknown_readings`: how
    many of the record's readings no measurement names. `name` and `value` are one reading's, `readings` the
    array's; in an array, a name given twice is read as its last reading, as a repeated key."""
    names = contract.reading_names()
    if contract.readings.array is None:
        known = F.coalesce(name.isin(*names.values()), F.lit(False))
        return {**{f"_source_m:{m}": F.when(name == reading, value) for m, reading in names.items()},
                "_unknown_readings": F.when(name.isNotNull() & ~known, 1).otherwise(0)}
    name_path = _variant_path(json_path_segments(contract.readings.name))
    value_path = _variant_path(json_path_segments(contract.readings.value))
    array = F.try_variant_get(readings, "$", "array<variant>")

    def named(element: Column) -> Column:
        return F.try_variant_get(element, name_path, "string")

    def last_named(reading: str) -> Column:
        return F.try_element_at(F.filter(array, lambda element: named(element) == reading), F.lit(-1))

    unknown = F.size(F.filter(array, lambda element: ~F.coalesce(named(element).isin(*names.values()),
                                                                   F.lit(False))))
    return {**{f"_source_m:{m}": F.try_variant_get(last_named(reading), value_path, "variant")
               for m, reading in names.items()},
            "_unknown_readings": F.coalesce(unknown, F.lit(0))}


def reference_time(read_at: Column | None = None) -> Column:
    """The clock a record's event time is judged against, which no device controls: when the broker appended
    the record, where the broker stamps it (Event Hubs; Kafka topics with `message.timestamp.type=LogAppendTime`),
    and never later than the micro-batch's own time (`current_timestamp()` in a stream: Spark keeps it in the
    offset log, so a replayed batch judges alike). A producer's own timestamp (Kafka's default CreateTime) is the
    device's clock, so it is not used. The broker's and the job's clocks are assumed to be NTP-synchronised.
    `read_at` replaces the batch's time with a column of when each record was read (`READ_AT`: the bronze table's,
    which the stream stamps beside the source when it keeps the records)."""
    append_time = F.when(F.col("kafka_timestamp_type") == LOG_APPEND_TIME, F.col("kafka_timestamp"))
    batch_time = F.current_timestamp() if read_at is None else read_at
    return F.least(batch_time, append_time)  # least() skips the null of a CreateTime record


def _typed_kind(role: str) -> DataType | None:
    """The SQL type the fast parse reads a contract role as (None: an object a path goes through)."""
    if role in ("seq", "schema_version"):
        return LongType()
    if role.startswith("m:"):
        return DoubleType()
    if role in ("event_time", _READING_VALUE, _READINGS):
        return VariantType()  # a string or a number, by the event-time formats; a reading's value, as measurements'
    return StringType() if role else None


def _typed_schema(keys: dict[str, list[str]]) -> StructType | None:
    """The fast parse's schema: each role's path with its `_typed_kind`; None when two roles need different types at
    one path (then every record takes the exact parse)."""
    tree: dict = {}
    for role, segments in keys.items():
        node = tree
        for key in segments[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                return None
        if node.setdefault(segments[-1], _typed_kind(role)) != _typed_kind(role):
            return None

    def struct(node: dict) -> StructType:
        return StructType([StructField(key, struct(kind) if isinstance(kind, dict) else kind)
                           for key, kind in node.items()])

    return StructType([*struct(tree).fields, StructField(_CORRUPT, StringType())])


def parse_events(raw: DataFrame, validation: Validation, contract: Contract | None = None,
                 reference: Column | None = None, typed_first: bool = True) -> DataFrame:
    """Raw records (see `columns.RAW_COLUMNS`) -> the same columns plus `payload`, the typed event
    columns (`event_columns`) of `contract` (default: `Contract()`), `error` (null for a valid event, otherwise one
    of `events.Reason`) and `EVENT_TIME_ADJUSTED`.

    An event time more than `validation.max_event_time_ahead` after `reference_time()` is a dead letter, or with
    `early_events = "adjust"` is taken as the reference time (and flagged); so no device's clock can move the
    watermark further than that ahead of real time. `reference` replaces `reference_time()` where the records carry
    the time they were read (a backfill judges each record of the bronze table as the stream did:
    `reference_time(ingested_at)`).
    `typed_first=False` sends every record through the exact parse (the property tests compare both)."""
    c = contract or Contract()
    readings = c.readings.paths() if c.readings else {}
    paths = {"device_id": c.device_id, "site": c.site, "event_time": c.event_time,
             **({"device_type": c.device_type} if c.device_type else {}),
             **({"seq": c.sequence} if c.sequence else {}),
             **({"schema_version": c.schema_version.path} if c.schema_version else {}),
             **{f"m:{name}": m.path for name, m in c.measurements.items() if m.path},
             **{f"tag:{name}": path for name, path in c.tags.items()},
             **{_READING_ROLES[field]: path for field, path in readings.items()}}
    keys = {role: json_path_segments(path) for role, path in paths.items() if in_body(path)}
    # Fields from a header, the key or the broker's timestamp, and a long record's measurements (from its
    # readings): VARIANTs judged as the body's are (`headers`, `_measurements_of_readings`).
    sourced = {role: F.col(f"_source_{role}") for role, path in paths.items() if not in_body(path)}
    sourced |= {f"m:{name}": F.col(f"_source_m:{name}") for name in c.measurements if c.readings}
    # Every object a path goes through (`measurements` in `$.measurements.temperature`) must be one where present.
    containers = sorted({tuple(k[:depth]) for k in keys.values() for depth in range(1, len(k))})
    fast_schema = _typed_schema(keys) if typed_first else None
    fast, exact = F.col("_fast"), F.col("_json")
    top_level = sorted({k[0] for k in keys.values()})
    exact_schema = StructType([*(StructField(key, VariantType()) for key in top_level),
                               StructField(_CORRUPT, StringType())])

    def typed(segments: list[str] | tuple[str, ...]) -> Column:
        return reduce(lambda column, key: column[key], segments, fast)

    def get(segments: list[str] | tuple[str, ...], sql_type: str) -> Column:
        """The value at `segments` from the exact parse's top-level VARIANT, in one step; null where the path does
        not lead."""
        first, *rest = segments
        return F.try_variant_get(exact[first], "$" + "".join(f"['{key}']" for key in rest), sql_type)

    def at(segments: list[str] | tuple[str, ...]) -> Column:
        return exact[segments[0]] if len(segments) == 1 else get(segments, "variant")

    def either(from_fast: Column, from_exact: Column) -> Column:
        return F.when(F.col("_vouched"), from_fast).otherwise(from_exact) if fast_schema else from_exact

    def value(role: str, sql_type: str) -> Column:
        if role in sourced:
            return F.try_variant_get(sourced[role], "$", sql_type)
        return either(typed(keys[role]), get(keys[role], sql_type))

    def variant(role: str) -> Column:
        return sourced[role] if role in sourced else at(keys[role])

    def json_type(role: str, segments: list[str] | tuple[str, ...]) -> Column:
        """The JSON type as `schema_of_variant` names it (null where absent); from the fast parse, its SQL type's."""
        kind = _typed_kind(role)
        known = (_json_type(typed(segments)) if kind == VariantType()
                 else F.when(typed(segments).isNotNull(), F.lit(_VARIANT_TYPE_NAMES[kind.typeName() if kind else ""])))
        return either(known, _json_type(at(segments)))

    types = {role: json_type(role, k) for role, k in keys.items()} | {
        role: _json_type(column) for role, column in sourced.items()}
    types |= {f"object:{i}": json_type("", k) for i, k in enumerate(containers)}
    event_time = variant("event_time") if "event_time" in sourced else either(typed(keys["event_time"]),
                                                                             at(keys["event_time"]))
    event_time_type, event_time_text = F.col("_type_event_time"), F.col("_event_time_text")
    # Microseconds since 1970, null when the event time is not a time at all. try_* never overflow, whatever the input.
    event_time_us = F.lit(None).cast("long")
    for name in reversed(c.event_time_formats):  # the first listed is tried first
        if name == "iso8601":
            event_time_us = F.when(event_time_text.rlike(_ISO_WITH_OFFSET),
                                   F.unix_micros(event_time_text.try_cast("timestamp"))).otherwise(event_time_us)
        elif name == "epoch_ms":
            event_time_us = F.when(event_time_type == "BIGINT", F.try_multiply(
                F.try_variant_get("_event_time", "$", "long"), F.lit(1000))).otherwise(event_time_us)
        else:
            seconds = F.try_multiply(F.try_variant_get("_event_time", "$", "decimal(38,6)"), F.lit(1_000_000))
            event_time_us = F.when(_is_number(event_time_type), seconds.try_cast("long")).otherwise(event_time_us)
    event_time_us = F.when(event_time_type == "TIMESTAMP", F.unix_micros(
        F.try_variant_get("_event_time", "$", "timestamp"))).otherwise(event_time_us)
    device_type = (F.coalesce(value("device_type", "string"), F.lit(c.default_device_type)) if c.device_type
                   else F.lit(c.default_device_type))
    tags = [F.struct(*[value(f"tag:{name}", "string").alias(name) for name in c.tags]).alias("tags")] if c.tags else []
    text_roles = [role for role in keys if _typed_kind(role) == StringType()]
    raw = raw.withColumns({f"_source_{role}": headers.field(paths[role], _typed_kind(role) == StringType(),
                                                            c.header_encoding) for role in sourced
                          if role in paths})
    vouched = (fast.isNotNull() & fast[_CORRUPT].isNull()
               & ~_any([F.coalesce(typed(keys[role]).rlike(_MAYBE_NOT_A_STRING), F.lit(False)) for role in text_roles]))
    # The text is made from the bytes where it is read, not carried through each step (a copy per step).
    payload, raw_columns = F.col("value").cast("string"), raw.columns
    # The reference, read once beside the source: Spark writes a query's time into its generated code as a
    # constant, and a stream's is new every micro-batch, so any projection holding it is compiled again each batch.
    # Here that is a small one; inside the parse it was the whole parse (~100 ms a batch, code the JIT never warmed).
    raw = raw.withColumn("_reference_us", F.unix_micros(reference_time() if reference is None else reference))
    if fast_schema:
        raw = raw.withColumn("_fast", F.from_json(payload, fast_schema, _JSON_OPTIONS)).withColumn("_vouched", vouched)
    raw = raw.withColumn("_json", F.when(~F.col("_vouched"), F.from_json(payload, exact_schema, _JSON_OPTIONS))
                         if fast_schema else F.from_json(payload, exact_schema, _JSON_OPTIONS))
    if c.readings:  # each reading read once, then each measurement's from it
        raw = raw.withColumns({f"_{role}": value(role, "string") if role == _READING_NAME
                               else either(typed(keys[role]), at(keys[role]))
                               for role in keys if role in _READING_ROLES.values()})
        raw = raw.withColumns(_measurements_of_readings(c, *(F.col(f"_{role}") for role in
                                                             (_READING_NAME, _READING_VALUE, _READINGS))))
    parsed = (
        raw.select(
            *raw_columns, "_reference_us", payload.alias("payload"),
            either(F.lit(False), exact.isNull() | exact[_CORRUPT].isNotNull()).alias("_malformed"),
            value("device_id", "string").alias("device_id"),
            value("site", "string").alias("site"),
            device_type.alias("device_type"),
            event_time.alias("_event_time"),
            (value("seq", "long") if c.sequence else F.lit(None).cast("long")).alias("seq"),
            *([F.col(f"_{_READING_NAME}").alias(READING)] if c.one_reading_per_record() else []),
            *(["_unknown_readings"] if c.readings else []),
            *[value(f"m:{name}", "double").alias(name) for name in c.measurements],
            *[variant(f"m:{name}").alias(f"_variant_m:{name}") for name, m in c.measurements.items()
              if m.booleans or m.numeric_strings],
            *tags,
            *([value("schema_version", "long").alias("_schema_version")] if c.schema_version else []),
            *[column.alias(f"_type_{role}") for role, column in types.items()],
        )
        # Each step its own projection, so that no value is computed twice.
        .withColumn("_event_time_text", F.when(event_time_type == "STRING",
                                               F.try_variant_get("_event_time", "$", "string")))
        .withColumn("_event_time_us", event_time_us)
        .withColumns({name: _reading(name, m)[0] for name, m in c.measurements.items()
                      if m.booleans or m.numeric_strings})
    )
    t = {role: F.col(f"_type_{role}") for role in types}
    required = ["device_id", "site", "event_time", *(["seq"] if c.sequence else []),
                *(["schema_version"] if c.schema_version else []),
                *[role for role in (_READINGS, _READING_NAME) if role in keys]]
    no_measurement = reduce(lambda a, b: a & b, [_is_absent(t[f"m:{name}"]) for name in c.measurements])
    for role, json_type in ((_READING_NAME, "STRING"), (_READINGS, "ARRAY")):  # else wrong_type, not missing
        if role in t:
            no_measurement = no_measurement & F.coalesce(t[role] == json_type, F.lit(True))
    missing_field = _any([_is_absent(t[role]) for role in required]) | no_measurement
    event_time_types = {"TIMESTAMP", *(json_type for name in c.event_time_formats
                                       for json_type in _EVENT_TIME_TYPES[name])}
    kept, failing = _value_checks(c)
    if c.bad_values == "drop_value":  # a record fails a value check only when it keeps no value
        nothing_left = ~_any(list(kept.values()))
        values_fail = {reason: nothing_left & _any(fails) for reason, fails in failing.items()}
    else:
        values_fail = {reason: _any(fails) for reason, fails in failing.items()}
    present = {role: ~_is_absent(t[role]) for role in t}
    wrong_type = _any([
        t["device_id"] != "STRING", t["site"] != "STRING",
        ~_any([t["event_time"].startswith(json_type) for json_type in event_time_types]),
        *([present["device_type"] & (t["device_type"] != "STRING")] if c.device_type else []),
        *([t["seq"] != "BIGINT"] if c.sequence else []),
        *([t["schema_version"] != "BIGINT"] if c.schema_version else []),
        *([t[_READING_NAME] != "STRING"] if _READING_NAME in t else []),
        *([t[_READINGS] != "ARRAY"] if _READINGS in t else []),
        values_fail[Reason.WRONG_TYPE],
        *[present[f"tag:{name}"] & ~t[f"tag:{name}"].isin("STRING", "BIGINT", "BOOLEAN") for name in c.tags],
        *[present[f"object:{i}"] & ~t[f"object:{i}"].startswith("OBJECT") for i in range(len(containers))],
    ])

    if c.readings:  # a reading no measurement names; with `unknown = "ignore"`, a record of no other reading
        unknown = F.col("_unknown_readings") > 0
        if _READING_NAME in t:
            unknown = unknown & (t[_READING_NAME] == "STRING")
        measured = _any([~_is_absent(t[f"m:{name}"]) for name in c.measurements])
        unknown_readings = unknown & ~measured if c.readings.unknown == "ignore" else unknown

    def bad_identifier(value: Column) -> Column:
        return (F.length(value) > validation.max_identifier_length) | value.rlike(_BAD_IDENTIFIER)

    event_us = F.col("_event_time_us")
    ahead_us = int(duration_seconds(validation.max_event_time_ahead) * 1_000_000)
    behind_us = int(duration_seconds(validation.max_event_time_behind) * 1_000_000)
    reference_us = F.col("_reference_us")
    # Null (out of range) when the subtraction itself would overflow: the reference cannot be that far off.
    offset_us = F.try_subtract(event_us, reference_us)
    storable = event_us.between(MIN_EVENT_TIME_US, MAX_EVENT_TIME_US)
    event_time_in_range = storable & offset_us.between(-behind_us, ahead_us)
    adjusted = (storable & (offset_us > ahead_us)) if validation.early_events == "adjust" else F.lit(False)
    identifiers = [F.col("device_id"), F.col("site"), F.col("device_type"),
                   *[F.col("tags")[name] for name in c.tags]]
    checks = [
        (F.octet_length("value") > validation.max_event_bytes, Reason.OVERSIZE),
        (F.col("_malformed"), Reason.MALFORMED_JSON),
        *([(unknown_readings, Reason.UNKNOWN_MEASUREMENT)] if c.readings else []),
        (missing_field, Reason.MISSING_FIELD),
        (wrong_type, Reason.WRONG_TYPE),
        *([(~F.col("_schema_version").isin(*c.schema_version.accepted), Reason.UNSUPPORTED_SCHEMA_VERSION)]
          if c.schema_version else []),
        (event_us.isNull() & (t["event_time"] == "STRING"), Reason.BAD_EVENT_TIME),
        (~F.coalesce(event_time_in_range | adjusted, F.lit(False)), Reason.EVENT_TIME_OUT_OF_RANGE),
        (_any([F.coalesce(bad_identifier(identifier), F.lit(False)) for identifier in identifiers]),
         Reason.INVALID_IDENTIFIER),
        (values_fail[Reason.NON_FINITE_VALUE], Reason.NON_FINITE_VALUE),
    ]
    if failing[Reason.VALUE_OUT_OF_RANGE]:  # no clause at all in the hot path unless ranges are configured
        checks.append((values_fail[Reason.VALUE_OUT_OF_RANGE], Reason.VALUE_OUT_OF_RANGE))
    error = F.coalesce(*[F.when(failed, F.lit(reason)) for failed, reason in checks])
    judged = parsed.withColumn("error", evaluated_once(error))
    if c.bad_values == "drop_value":
        valid = F.col("error").isNull()
        judged = judged.observe("dropped_values", *[
            reduce(lambda a, b: a + b, [F.count_if(valid & fails) for fails in each]).alias(reason)
            for reason, each in failing.items() if each]).withColumns(
            {name: F.when(keep, F.col(name)) for name, keep in kept.items()})
    if c.readings and c.readings.unknown == "ignore":  # counted (pipeline_progress' ignored_readings), left out
        ignored = F.col("error").isNull() | (F.col("error") == Reason.UNKNOWN_MEASUREMENT)
        judged = judged.observe("ignored_readings", F.coalesce(F.sum(F.when(ignored, F.col("_unknown_readings"))),
                                                               F.lit(0)).alias("ignored_readings"))
        judged = judged.where(~F.coalesce(F.col("error") == Reason.UNKNOWN_MEASUREMENT, F.lit(False)))
    return (judged
            .withColumn("event_time", F.when(event_time_in_range, F.timestamp_micros(event_us))
                        .when(adjusted, F.timestamp_micros(reference_us)))
            .withColumn(EVENT_TIME_ADJUSTED, F.coalesce(adjusted & F.col("error").isNull(), F.lit(False)))
            .drop(*[f"_source_{role}" for role in sourced])
            .drop("_reference_us", "_malformed", "_event_time", "_event_time_text", "_event_time_us",
                  "_schema_version", "_unknown_readings", *[f"_type_{role}" for role in types],
                  *[f"_variant_m:{name}" for name, m in c.measurements.items() if m.booleans or m.numeric_strings]))


def event_columns(parsed: DataFrame) -> list[str]:
    """The typed columns of `parse_events`' events: device_id, site, device_type, event_time, seq (null without a
    sequence field), one column per measurement, and `tags` (a struct of the contract's tags) when it has any."""
    return [name for name in parsed.columns
            if name not in (*RAW_COLUMNS, READ_AT, PAYLOAD, ERROR, EVENT_TIME_ADJUSTED)]


def valid_events(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("error").isNull()).select(*event_columns(parsed))


DEAD_LETTER_COLUMNS = ("payload", "topic", "partition", "offset", "kafka_timestamp", "headers", "reason")


def dead_letter_columns() -> list[Column]:
    """What is needed to find and replay an invalid record: raw payload, position, headers where the source read
    them (an IoT Hub record's device id is there), reason (`DEAD_LETTER_COLUMNS`)."""
    return [*map(F.col, DEAD_LETTER_COLUMNS[:-1]), F.col("error").alias("reason")]


def dead_letters(parsed: DataFrame) -> DataFrame:
    """Invalid records, as `DEAD_LETTER_COLUMNS`."""
    return parsed.where(F.col("error").isNotNull()).select(*dead_letter_columns())
