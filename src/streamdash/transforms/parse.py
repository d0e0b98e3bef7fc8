"""Parse raw records into typed events as the telemetry contract (`config.Contract`) describes them, and decide, per
record, whether it is valid or why not.

The contract becomes a plan first (`plan`): one `Field` per value a record holds, saying where it is read (a body
JSON path, or a column of its own: a header, the key, the broker's time, a long record's reading), what the fast
parse reads it as, and which JSON types it accepts. The parse reads every field of the plan the same way
(`_Reader`) and judges it by its entry; a new place to read fields from is one more `Field` source, a new value type
one entry of `_OPT_IN_TYPES`, a new event-time format one of `_EVENT_TIME_FORMATS`.

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

from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, DoubleType, LongType, StringType, StructField, StructType, VariantType

from streamdash.columns import CORRUPT_RECORD as _CORRUPT
from streamdash.columns import ERROR, EVENT_TIME_ADJUSTED, PAYLOAD, RAW_COLUMNS, READ_AT, READING, TAGS
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
# What `schema_of_variant` calls the JSON type a fast-parse type stands for (None: an object).
_VARIANT_TYPE_NAMES = {"long": "BIGINT", "double": "DOUBLE", "string": "STRING", None: "OBJECT"}
# The JSON types a field may hold (`schema_of_variant`'s names; DECIMAL stands for any DECIMAL(p,s)).
_TEXT, _INTEGER, _OBJECT, _ARRAY = ("STRING",), ("BIGINT",), ("OBJECT",), ("ARRAY",)
_NUMBER = ("BIGINT", "DOUBLE", "DECIMAL")
_TAG_TYPES = ("STRING", "BIGINT", "BOOLEAN")

# Long records' roles (`contract.readings`): a record's one reading, or its array of them, by `Readings.paths` field.
_READING_NAME, _READING_VALUE, _READINGS = "reading:name", "reading:value", "readings"


@dataclass(frozen=True)
class Field:
    """One value the contract reads from each record. `role`: its name in the parse (`device_id`, `m:temperature`,
    `tag:zone`, `reading:name`, `object:0` for an object a body path goes through). `segments`: its keys in the
    body, or None where its VARIANT is the column `_source_<role>`: `source` (a header, the key, the broker's
    time) or a long record's reading (`_measurements_of_readings`). `kind`: the SQL type the fast parse reads it
    as (None: an object). `accepts`: the JSON types it may hold (None: a measurement, judged by its value checks).
    `required`: a record without it is `missing_field`."""

    role: str
    kind: DataType | None
    accepts: tuple[str, ...] | None
    required: bool = False
    segments: tuple[str, ...] | None = None
    source: Column | None = None

    @property
    def is_text(self) -> bool:
        return self.kind == StringType()


def _event_time_types(formats: list[str]) -> tuple[str, ...]:
    return ("TIMESTAMP", *(json_type for name in formats for json_type in _EVENT_TIME_FORMATS[name][0]))


def plan(c: Contract) -> list[Field]:
    """The contract's fields, each with where it is read and how it is judged (the body's objects a path goes
    through among them: each must be an object where present)."""
    entries: list[tuple[str, str | None, DataType, tuple[str, ...] | None, bool]] = [
        ("device_id", c.device_id, StringType(), _TEXT, True),
        ("site", c.site, StringType(), _TEXT, True),
        ("event_time", c.event_time, VariantType(), _event_time_types(c.event_time_formats), True),
        *([("device_type", c.device_type, StringType(), _TEXT, False)] if c.device_type else []),
        *([("seq", c.sequence, LongType(), _INTEGER, True)] if c.sequence else []),
        *([("schema_version", c.schema_version.path, LongType(), _INTEGER, True)] if c.schema_version else []),
        *[(f"m:{name}", m.path, DoubleType(), None, False) for name, m in c.measurements.items()],
        *[(f"tag:{name}", path, StringType(), _TAG_TYPES, False) for name, path in c.tags.items()],
    ]
    if c.readings:  # the reading's (or the array's) paths; each measurement then has none, its readings name it
        reading = {"name": (_READING_NAME, StringType(), _TEXT, True),
                   "value": (_READING_VALUE, VariantType(), None, False),
                   "array": (_READINGS, VariantType(), _ARRAY, True)}
        entries += [(reading[field][0], path, *reading[field][1:]) for field, path in c.readings.paths().items()]
    fields = []
    for role, path, kind, accepts, required in entries:
        if path is None:  # a long record's measurement, from `_measurements_of_readings`
            fields.append(Field(role, kind, accepts, required))
        elif in_body(path):
            fields.append(Field(role, kind, accepts, required, tuple(json_path_segments(path))))
        else:
            fields.append(Field(role, kind, accepts, required,
                                source=headers.field(path, kind == StringType(), c.header_encoding)))
    containers = sorted({f.segments[:depth] for f in fields if f.segments for depth in range(1, len(f.segments))})
    return fields + [Field(f"object:{i}", None, _OBJECT, segments=k) for i, k in enumerate(containers)]


def typed_schema(fields: list[Field]) -> StructType | None:
    """The fast parse's schema: each body field's path with its `kind` (the objects on the way follow from the
    paths); None when two fields need different types at one path (then every record takes the exact parse)."""
    tree: dict = {}
    for f in fields:
        if f.segments is None or f.kind is None:
            continue
        node = tree
        for key in f.segments[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                return None
        if node.setdefault(f.segments[-1], f.kind) != f.kind:
            return None

    def struct(node: dict) -> StructType:
        return StructType([StructField(key, struct(kind) if isinstance(kind, dict) else kind)
                           for key, kind in node.items()])

    return StructType([*struct(tree).fields, StructField(_CORRUPT, StringType())])


def _source(f: Field) -> Column:
    return F.col(f"_source_{f.role}")


class _Reader:
    """Each field's value, VARIANT and JSON type: a body field's from the fast parse (`_fast`) where it vouched for
    the record (`_vouched`), else from the exact parse's top-level VARIANTs (`_json`); any other's from its source
    column (`_source_<role>`)."""

    def __init__(self, typed_first: bool) -> None:
        self.typed_first = typed_first

    @staticmethod
    def typed(f: Field) -> Column:
        return reduce(lambda column, key: column[key], f.segments, F.col("_fast"))

    @staticmethod
    def _exact(f: Field, sql_type: str) -> Column:
        first, *rest = f.segments
        if not rest and sql_type == "variant":
            return F.col("_json")[first]
        return F.try_variant_get(F.col("_json")[first], _variant_path(rest), sql_type)

    def _either(self, from_fast: Column, from_exact: Column) -> Column:
        return F.when(F.col("_vouched"), from_fast).otherwise(from_exact) if self.typed_first else from_exact

    def malformed(self) -> Column:
        """Whether the record is not a JSON object (never, where the fast parse vouched for it)."""
        return self._either(F.lit(False), F.col("_json").isNull() | F.col("_json")[_CORRUPT].isNotNull())

    def value(self, f: Field, sql_type: str) -> Column:
        if f.segments is None:
            return F.try_variant_get(_source(f), "$", sql_type)
        return self._either(self.typed(f), self._exact(f, sql_type))

    def variant(self, f: Field) -> Column:
        """The field as a VARIANT: the fast parse's where it reads one (the event time, a reading's value)."""
        if f.segments is None:
            return _source(f)
        if f.kind == VariantType():
            return self._either(self.typed(f), self._exact(f, "variant"))
        return self._exact(f, "variant")

    def json_type(self, f: Field) -> Column:
        """The JSON type as `schema_of_variant` names it (null where absent); from the fast parse, its SQL type's."""
        if f.segments is None:
            return _json_type(_source(f))
        known = (_json_type(self.typed(f)) if f.kind == VariantType() else
                 F.when(self.typed(f).isNotNull(), F.lit(_VARIANT_TYPE_NAMES[f.kind.typeName() if f.kind else None])))
        return self._either(known, _json_type(self._exact(f, "variant")))


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


def _accepted(json_type: Column, accepts: tuple[str, ...]) -> Column:
    exact = [name for name in accepts if name != "DECIMAL"]
    accepted = json_type == exact[0] if len(exact) == 1 else json_type.isin(*exact)
    return accepted | json_type.startswith("DECIMAL") if "DECIMAL" in accepts else accepted


def _is_number(json_type: Column) -> Column:
    return _accepted(json_type, _NUMBER)


def _iso8601(text: Column, variant: Column) -> Column:
    return F.when(text.rlike(_ISO_WITH_OFFSET), F.unix_micros(text.try_cast("timestamp")))


def _epoch_ms(text: Column, variant: Column) -> Column:
    return F.try_multiply(F.try_variant_get(variant, "$", "long"), F.lit(1000))


def _epoch_s(text: Column, variant: Column) -> Column:
    return F.try_multiply(F.try_variant_get(variant, "$", "decimal(38,6)"), F.lit(1_000_000)).try_cast("long")


# Each event-time format: the JSON types it reads, and its microseconds since 1970 (null where it is none) from the
# value's text (null unless a string) and its VARIANT. try_* never overflow, whatever the input.
_EVENT_TIME_FORMATS: dict[str, tuple[tuple[str, ...], Callable[[Column, Column], Column]]] = {
    "iso8601": (_TEXT, _iso8601),
    "epoch_ms": (_INTEGER, _epoch_ms),
    "epoch_s": (_NUMBER, _epoch_s),
}


def _event_time_us(formats: list[str], json_type: Column, text: Column, variant: Column) -> Column:
    """Microseconds since 1970 by the first of `formats` whose JSON types the value has (a TIMESTAMP, from a header
    or the broker, whatever they are), null when it reads no time (no two formats share a JSON type)."""
    micros = F.lit(None).cast("long")
    for name in reversed(formats):  # the first listed is tried first
        accepts, read = _EVENT_TIME_FORMATS[name]
        micros = F.when(_accepted(json_type, accepts), read(text, variant)).otherwise(micros)
    return F.when(json_type == "TIMESTAMP", F.unix_micros(F.try_variant_get(variant, "$", "timestamp"))
                  ).otherwise(micros)


def _boolean(json_type: Column, variant: Column) -> tuple[Column, Column]:
    return json_type == "BOOLEAN", F.try_variant_get(variant, "$", "boolean").cast("double")


def _numeric_string(json_type: Column, variant: Column) -> tuple[Column, Column]:
    text = F.try_variant_get(variant, "$", "string")
    return (json_type == "STRING") & F.coalesce(text.rlike(_JSON_NUMBER), F.lit(False)), text.try_cast("double")


# A measurement's opt-in JSON types, by its option: (whether a value is of the type, its number) from the value's
# JSON type and VARIANT.
_OPT_IN_TYPES: dict[str, Callable[[Column, Column], tuple[Column, Column]]] = {
    "booleans": _boolean,
    "numeric_strings": _numeric_string,
}


def _opt_ins(measurement: Measurement) -> list[Callable[[Column, Column], tuple[Column, Column]]]:
    return [read for option, read in _OPT_IN_TYPES.items() if getattr(measurement, option)]


def _number(name: str, measurement: Measurement) -> tuple[Column, Column]:
    """(the measurement as a number, whether its JSON type is one the contract reads as a number) from the parse's
    columns: its JSON type `_type_m:<name>`, the number read as `<name>` and, with an opt-in type, the value itself
    `_variant_m:<name>`."""
    json_type, value = F.col(f"_type_m:{name}"), F.col(name)
    accepted = _is_number(json_type)
    for read in _opt_ins(measurement):
        is_one, number = read(json_type, F.col(f"_variant_m:{name}"))
        accepted, value = accepted | is_one, F.when(is_one, number).otherwise(value)
    return value, F.coalesce(accepted, F.lit(False))


def _value_checks(contract: Contract) -> tuple[dict[str, Column], dict[str, list[Column]]]:
    """(per measurement, whether its value is kept; per reason a value can fail (wrong_type, non_finite_value,
    value_out_of_range, the last with ranges only), per measurement whether its value fails it). Absent or null
    values fail nothing and are not kept."""
    kept: dict[str, Column] = {}
    failing: dict[str, list[Column]] = {Reason.WRONG_TYPE: [], Reason.NON_FINITE_VALUE: [],
                                        Reason.VALUE_OUT_OF_RANGE: []}
    for name, measurement in contract.measurements.items():
        value, accepted = F.col(name), _number(name, measurement)[1]
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
    """Each measurement's value (a VARIANT, null where the record has no reading of it) as `_source_m:<name>`, and
    `_unknown_readings`: how many of the record's readings no measurement names. `name` and `value` are one
    reading's, `readings` the array's; in an array, a name given twice is read as its last reading, as a repeated
    key."""
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


def _read(raw: DataFrame, c: Contract, fields: list[Field], reference: Column, typed_first: bool) -> DataFrame:
    """The raw columns, `payload`, the contract's fields by the plan (values, JSON types as `_type_<role>`) and the
    columns their checks need: `_reference_us`, `_malformed`, `_event_time_us`, ..."""
    fast_schema = typed_schema(fields) if typed_first else None
    reader, by_role = _Reader(fast_schema is not None), {f.role: f for f in fields}
    measurements = {name: by_role[f"m:{name}"] for name in c.measurements}
    # The text is made from the bytes where it is read, not carried through each step (a copy per step).
    payload, raw_columns = F.col("value").cast("string"), raw.columns
    top_level = sorted({f.segments[0] for f in fields if f.segments})
    exact_schema = StructType([*(StructField(key, VariantType()) for key in top_level),
                               StructField(_CORRUPT, StringType())])
    # The reference, read once beside the source: Spark writes a query's time into its generated code as a
    # constant, and a stream's is new every micro-batch, so any projection holding it is compiled again each batch.
    # Here that is a small one; inside the parse it was the whole parse (~100 ms a batch, code the JIT never warmed).
    raw = raw.withColumn("_reference_us", F.unix_micros(reference))
    if fast_schema:
        vouched = (F.col("_fast").isNotNull() & F.col("_fast")[_CORRUPT].isNull()
                   & ~_any([F.coalesce(reader.typed(f).rlike(_MAYBE_NOT_A_STRING), F.lit(False))
                            for f in fields if f.segments and f.is_text]))
        raw = raw.withColumn("_fast", F.from_json(payload, fast_schema, _JSON_OPTIONS)).withColumn("_vouched", vouched)
    exact = F.from_json(payload, exact_schema, _JSON_OPTIONS)
    raw = raw.withColumn("_json", F.when(~F.col("_vouched"), exact) if fast_schema else exact)
    if c.readings:  # each reading read once, then each measurement's from it
        raw = raw.withColumns({f"_{role}": reader.value(by_role[role], "string") if role == _READING_NAME
                               else reader.variant(by_role[role])
                               for role in (_READING_NAME, _READING_VALUE, _READINGS) if role in by_role})
        raw = raw.withColumns(_measurements_of_readings(c, *(F.col(f"_{role}") for role in
                                                             (_READING_NAME, _READING_VALUE, _READINGS))))
    raw = raw.withColumns({f"_source_{f.role}": f.source for f in fields if f.source is not None})
    device_type = (F.coalesce(reader.value(by_role["device_type"], "string"), F.lit(c.default_device_type))
                   if c.device_type else F.lit(c.default_device_type))
    tags = [F.struct(*[reader.value(by_role[f"tag:{name}"], "string").alias(name) for name in c.tags]).alias(TAGS)]
    event_time_type, event_time_text = F.col("_type_event_time"), F.col("_event_time_text")
    return (
        raw.select(
            *raw_columns, "_reference_us", payload.alias(PAYLOAD), reader.malformed().alias("_malformed"),
            reader.value(by_role["device_id"], "string").alias("device_id"),
            reader.value(by_role["site"], "string").alias("site"),
            device_type.alias("device_type"),
            reader.variant(by_role["event_time"]).alias("_event_time"),
            (reader.value(by_role["seq"], "long") if c.sequence else F.lit(None).cast("long")).alias("seq"),
            *([F.col(f"_{_READING_NAME}").alias(READING)] if c.one_reading_per_record() else []),
            *(["_unknown_readings"] if c.readings else []),
            *[reader.value(f, "double").alias(name) for name, f in measurements.items()],
            *[reader.variant(f).alias(f"_variant_m:{name}") for name, f in measurements.items()
              if _opt_ins(c.measurements[name])],
            *(tags if c.tags else []),
            *([reader.value(by_role["schema_version"], "long").alias("_schema_version")] if c.schema_version else []),
            *[reader.json_type(f).alias(f"_type_{f.role}") for f in fields],
        )
        # Each step its own projection, so that no value is computed twice.
        .withColumn("_event_time_text", F.when(event_time_type == "STRING",
                                               F.try_variant_get("_event_time", "$", "string")))
        .withColumn("_event_time_us", _event_time_us(c.event_time_formats, event_time_type, event_time_text,
                                                     F.col("_event_time")))
        .withColumns({name: _number(name, m)[0] for name, m in c.measurements.items() if _opt_ins(m)})
    )


def _checks(c: Contract, validation: Validation, fields: list[Field],
            values_fail: dict[str, Column]) -> list[tuple[Column, str]]:
    """Each reason a record can fail, in the order they are judged, with its condition on `_read`'s columns;
    `values_fail`: the measurements' value checks by reason (value_out_of_range only with ranges)."""
    t = {f.role: F.col(f"_type_{f.role}") for f in fields}
    in_range, adjusted = _event_time_window(validation)
    no_measurement = reduce(lambda a, b: a & b, [_is_absent(t[f"m:{name}"]) for name in c.measurements])
    for role, json_type in ((_READING_NAME, "STRING"), (_READINGS, "ARRAY")):  # else wrong_type, not missing
        if role in t:
            no_measurement = no_measurement & F.coalesce(t[role] == json_type, F.lit(True))
    missing_field = _any([_is_absent(t[f.role]) for f in fields if f.required]) | no_measurement
    # A required field's absence is missing_field, judged first.
    wrong_type = _any([*[(~_accepted(t[f.role], f.accepts) if f.required
                          else ~_is_absent(t[f.role]) & ~_accepted(t[f.role], f.accepts)) for f in fields if f.accepts],
                       values_fail[Reason.WRONG_TYPE]])
    checks = [(F.octet_length("value") > validation.max_event_bytes, Reason.OVERSIZE),
              (F.col("_malformed"), Reason.MALFORMED_JSON)]
    if c.readings:  # a reading no measurement names; with `unknown = "ignore"`, a record of no other reading
        unknown = F.col("_unknown_readings") > 0
        if _READING_NAME in t:
            unknown = unknown & (t[_READING_NAME] == "STRING")
        if c.readings.unknown == "ignore":
            unknown = unknown & ~_any([~_is_absent(t[f"m:{name}"]) for name in c.measurements])
        checks.append((unknown, Reason.UNKNOWN_MEASUREMENT))
    checks += [(missing_field, Reason.MISSING_FIELD), (wrong_type, Reason.WRONG_TYPE)]
    if c.schema_version:
        checks.append((~F.col("_schema_version").isin(*c.schema_version.accepted), Reason.UNSUPPORTED_SCHEMA_VERSION))
    identifiers = [F.col("device_id"), F.col("site"), F.col("device_type"), *[F.col(TAGS)[name] for name in c.tags]]
    bad_identifier = _any([F.coalesce((F.length(value) > validation.max_identifier_length)
                                      | value.rlike(_BAD_IDENTIFIER), F.lit(False)) for value in identifiers])
    checks += [(F.col("_event_time_us").isNull() & (t["event_time"] == "STRING"), Reason.BAD_EVENT_TIME),
               (~F.coalesce(in_range | adjusted, F.lit(False)), Reason.EVENT_TIME_OUT_OF_RANGE),
               (bad_identifier, Reason.INVALID_IDENTIFIER),
               (values_fail[Reason.NON_FINITE_VALUE], Reason.NON_FINITE_VALUE)]
    if Reason.VALUE_OUT_OF_RANGE in values_fail:  # no clause at all in the hot path unless ranges are configured
        checks.append((values_fail[Reason.VALUE_OUT_OF_RANGE], Reason.VALUE_OUT_OF_RANGE))
    return checks


def _event_time_window(validation: Validation) -> tuple[Column, Column]:
    """(whether the event time is one Spark can store within the allowed offsets from the reference time, whether it
    is an early one taken at the reference time: `early_events = "adjust"`)."""
    event_us, reference_us = F.col("_event_time_us"), F.col("_reference_us")
    ahead_us = int(duration_seconds(validation.max_event_time_ahead) * 1_000_000)
    behind_us = int(duration_seconds(validation.max_event_time_behind) * 1_000_000)
    # Null (out of range) when the subtraction itself would overflow: the reference cannot be that far off.
    offset_us = F.try_subtract(event_us, reference_us)
    storable = event_us.between(MIN_EVENT_TIME_US, MAX_EVENT_TIME_US)
    adjusted = (storable & (offset_us > ahead_us)) if validation.early_events == "adjust" else F.lit(False)
    return storable & offset_us.between(-behind_us, ahead_us), adjusted


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
    fields = plan(c)
    parsed = _read(raw, c, fields, reference_time() if reference is None else reference, typed_first)
    in_range, adjusted = _event_time_window(validation)
    kept, failing = _value_checks(c)
    if c.bad_values == "drop_value":  # a record fails a value check only when it keeps no value
        nothing_left = ~_any(list(kept.values()))
        values_fail = {reason: nothing_left & _any(fails) for reason, fails in failing.items() if fails}
    else:
        values_fail = {reason: _any(fails) for reason, fails in failing.items() if fails}
    error = F.coalesce(*[F.when(failed, F.lit(reason)) for failed, reason in _checks(c, validation, fields,
                                                                                     values_fail)])
    judged = parsed.withColumn(ERROR, evaluated_once(error))
    if c.bad_values == "drop_value":
        valid = F.col(ERROR).isNull()
        judged = judged.observe("dropped_values", *[
            reduce(lambda a, b: a + b, [F.count_if(valid & fails) for fails in each]).alias(reason)
            for reason, each in failing.items() if each]).withColumns(
            {name: F.when(keep, F.col(name)) for name, keep in kept.items()})
    if c.readings and c.readings.unknown == "ignore":  # counted (pipeline_progress' ignored_readings), left out
        ignored = F.col(ERROR).isNull() | (F.col(ERROR) == Reason.UNKNOWN_MEASUREMENT)
        judged = judged.observe("ignored_readings", F.coalesce(F.sum(F.when(ignored, F.col("_unknown_readings"))),
                                                               F.lit(0)).alias("ignored_readings"))
        judged = judged.where(~F.coalesce(F.col(ERROR) == Reason.UNKNOWN_MEASUREMENT, F.lit(False)))
    return (judged
            .withColumn("event_time", F.when(in_range, F.timestamp_micros("_event_time_us"))
                        .when(adjusted, F.timestamp_micros("_reference_us")))
            .withColumn(EVENT_TIME_ADJUSTED, F.coalesce(adjusted & F.col(ERROR).isNull(), F.lit(False)))
            .drop("_reference_us", "_malformed", "_event_time", "_event_time_text", "_event_time_us",
                  "_schema_version", "_unknown_readings",
                  *[f"_type_{f.role}" for f in fields], *[f"_variant_m:{name}" for name in c.measurements]))


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
