"""One typed, validated configuration for the job, loaded from `conf/<env>.toml`.

String values may use `${VAR}` / `${VAR:-default}` (environment): the one route for secrets, which Databricks fills
from a secret scope in the job cluster's environment (`resources/streamdash.job.yml`) and the notebooks from the same
scope (`streamdash.notebook`). `--set section.field=value` overrides a value after the file is read. A bad
configuration fails at start with one message naming each bad field, and never echoes a value.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from streamdash import columns
from streamdash.errors import ConfigError
from streamdash.events import DEDUPLICATION_KEY

# KLL sketch size behind the p95: normalized rank error about 1.65% (DataSketches' bound, 99% confidence).
DEFAULT_QUANTILE_SKETCH_K = 200
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|milliseconds?|s|seconds?|m|minutes?|h|hours?|d|days?)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> float:
    """'10 seconds', '1 minute', '500 ms', '7 days' -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError("not a duration like '500 ms', '10 seconds', '1 minute', '2 hours' or '7 days'")
    unit = match.group(2)
    key = "ms" if unit.startswith("ms") or unit.startswith("milli") else unit[0]
    return int(match.group(1)) * _UNIT_SECONDS[key]


def window_label(size: str) -> str:
    """'10 seconds' -> '10s', '1 minute' -> '1m': the `window` tag in InfluxDB."""
    seconds = duration_seconds(size)
    for unit, length in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= length and seconds % length == 0:
            return f"{int(seconds // length)}{unit}"
    return f"{int(seconds * 1000)}ms"


def Duration(longest: str) -> Any:  # noqa: N802 - reads as a type in the models
    """A duration like '500 ms' or '2 hours', at most `longest` (what its consumer can take)."""
    limit_s = duration_seconds(longest)

    def check_duration(text: str) -> str:
        if duration_seconds(text) > limit_s:
            raise ValueError(f"must be at most {longest}")
        return text

    check_duration.longest = longest  # for the configuration reference
    return Annotated[str, AfterValidator(check_duration)]


# A finite number of seconds, at most an hour: timeouts and retry delays.
Seconds = Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)]
# Kafka topic and Event Hubs names: letters, digits, '.', '_', '-'.
_TOPIC = r"^[A-Za-z0-9._-]{1,256}$"


def redacted(url: str) -> str:
    """`url` without a user:password part, for messages and logs."""
    return re.sub(r"(?<=://)[^/@]*@", "***@", url)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSource(_Section):
    """Apache Kafka, or Azure Event Hubs through its Kafka endpoint (`security = "eventhubs"`)."""

    kind: Literal["kafka"] = "kafka"
    bootstrap_servers: str = Field(pattern=r"^\S+$", max_length=4096)
    topic: str = Field(pattern=_TOPIC)
    security: Literal["plaintext", "eventhubs"] = "plaintext"
    connection_string: SecretStr | None = None
    ca_file: str | None = None
    consumer_group: str | None = None
    starting_offsets: str = "latest"
    max_offsets_per_trigger: int | None = Field(default=None, gt=0, le=1_000_000_000)
    fail_on_data_loss: bool = True

    @model_validator(mode="after")
    def _eventhubs_needs_connection_string(self) -> KafkaSource:
        if self.security == "eventhubs" and not (self.connection_string and self.connection_string.get_secret_value()):
            raise ValueError("security = 'eventhubs' needs connection_string (the namespace's connection string)")
        if self.ca_file and not Path(self.ca_file).is_file():
            raise ValueError("ca_file does not name a readable file")
        return self


class EventHubsNativeSource(_Section):
    """Legacy: the azure-eventhubs-spark connector (Scala 2.12 runtimes only; unmaintained since 2022)."""

    kind: Literal["eventhubs_native"]
    connection_string: SecretStr
    consumer_group: str = "$Default"
    starting_position: Literal["earliest", "latest"] = "latest"
    max_events_per_trigger: int | None = Field(default=None, gt=0, le=1_000_000_000)


class Aggregation(_Section):
    window_sizes: list[str] = Field(default=["10 seconds", "1 minute"], min_length=1, max_length=10)
    watermark: Duration("1 day") = "30 seconds"
    quantile_sketch_k: int = Field(default=DEFAULT_QUANTILE_SKETCH_K, ge=8, le=65535)

    @field_validator("window_sizes")
    @classmethod
    def _valid_windows(cls, sizes: list[str]) -> list[str]:
        """All sizes are aggregated in one pass under the largest window, so each must divide it."""
        seconds = [duration_seconds(size) for size in sizes]
        if not all(1 <= s <= 86400 and s == int(s) for s in seconds):
            raise ValueError("a window size must be whole seconds, between one second and one day")
        if len({window_label(size) for size in sizes}) != len(sizes):
            raise ValueError("window sizes repeat")
        if any(max(seconds) % s for s in seconds):
            raise ValueError("every window size must divide the largest one (e.g. 10 seconds, 1 minute, 5 minutes)")
        return sizes


_JSON_PATH = re.compile(r"^\$(?:\.[A-Za-z0-9_@-]+|\['[^'\\\x00-\x1f]+'\])+$")
_JSON_PATH_SEGMENT = re.compile(r"\.([A-Za-z0-9_@-]+)|\['([^']+)'\]")
MAX_PATH_DEPTH = 8


def json_path_segments(path: str) -> list[str]:
    """'$.measurements.temperature' or "$['a b'].c" -> the keys from the root: ['measurements', 'temperature']."""
    return [name or quoted for name, quoted in _JSON_PATH_SEGMENT.findall(path)]


def _check_json_path(path: str) -> str:
    if len(path) > 256 or not _JSON_PATH.match(path):
        raise ValueError("not a JSON path of object keys like '$.deviceId', '$.measurements.temperature' or "
                         "\"$['key with spaces']\"")
    if len(json_path_segments(path)) > MAX_PATH_DEPTH:
        raise ValueError(f"a JSON path may go at most {MAX_PATH_DEPTH} keys deep")
    return path


JsonPath = Annotated[str, AfterValidator(_check_json_path)]

# Where else a field can be read from, beside the JSON body: a Kafka header (`header:<name>`: IoT Hub's system and
# application properties arrive so through Event Hubs), the record's key, the broker's timestamp (the event time
# only: Event Hubs' enqueued time).
HEADER_PREFIX, KEY, TIMESTAMP = "header:", "key", "timestamp"
_HEADER = re.compile(r"^header:[^\x00-\x1f]{1,256}$")


def _check_field_path(path: str) -> str:
    if path in (KEY, TIMESTAMP) or _HEADER.match(path):
        return path
    if in_body(path):
        return _check_json_path(path)
    raise ValueError("not a JSON path like '$.deviceId' or \"$['key with spaces']\", a header "
                     "('header:iothub-connection-device-id'), 'key' or 'timestamp'")


def in_body(path: str) -> bool:
    """Whether `path` is read from the JSON body (a JSON path), not a header, the key or the timestamp."""
    return path.startswith("$")


# A field's place in the record (see `_check_field_path`).
FieldPath = Annotated[str, AfterValidator(_check_field_path)]


def _same_in_any_case(named: list[tuple[str, Any]], exact_too: bool = False) -> str | None:
    """'a and b' for the first two (field, name) whose names are equal in lower case but differ (`exact_too`: or
    not), else None. A name is a string or a tuple of payload keys."""
    seen: dict[Any, tuple[str, Any]] = {}
    for field, name in named:
        folded = name.lower() if isinstance(name, str) else tuple(key.lower() for key in name)
        earlier = seen.setdefault(folded, (field, name))
        if earlier[0] != field and (exact_too or earlier[1] != name):
            return f"{earlier[0]} and {field}"
    return None

# A measurement's or a tag's name: an InfluxDB field or tag key, and a column of the job's DataFrames.
Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
STATISTIC_NAMES = ("mean", "min", "max", "last", "stddev", "p95")  # `transforms.aggregate.STATISTICS`, in order


class Measurement(_Section):
    # Where a wide record holds its value; unset with `contract.readings` (long records), whose readings name it.
    path: FieldPath | None = None
    # With `contract.readings`: the name its readings carry, where it is not the measurement's own ("Temp (C)").
    reading: str | None = Field(default=None, min_length=1, max_length=256)
    # Plausible values, e.g. [-80, 150]: a value outside is a dead letter (`value_out_of_range`). Unset: any finite.
    range: tuple[float, float] | None = None
    # Opt-in readings of other JSON types: true/false as 1/0, and a string holding a JSON number ("40.5") as it.
    booleans: bool = False
    numeric_strings: bool = False

    @field_validator("range")
    @classmethod
    def _finite_and_ordered(cls, bounds: tuple[float, float] | None) -> tuple[float, float] | None:
        if bounds is not None and not (math.isfinite(bounds[0]) and math.isfinite(bounds[1])
                                       and bounds[0] <= bounds[1]):
            raise ValueError("a range must be two finite numbers, low <= high")
        return bounds


class SchemaVersion(_Section):
    path: FieldPath = "$.schemaVersion"
    accepted: list[int] = Field(default=[1], min_length=1, max_length=100)


class Readings(_Section):
    """Long records: each reading names its measurement. Either the record is one reading (`name` and `value` are
    paths in the body), or `array` is the path of an array of readings, each an object where `name` and `value` are
    paths. The job pivots them into the same wide windows as a wide record's (`temperature_mean`, no sensor tag).
    A reading whose name no measurement has: its record is a dead letter (`unknown_measurement`), or with `unknown
    = "ignore"` the reading is left out and counted (pipeline_progress' ignored_readings); a record left with none
    is then left out too, and its readings counted."""

    array: JsonPath | None = None
    name: JsonPath = "$.name"
    value: JsonPath = "$.value"
    unknown: Literal["dead_letter", "ignore"] = "dead_letter"

    def paths(self) -> dict[str, str]:
        """The body paths read from each record, by field: the array, or the one reading's name and value."""
        return {"array": self.array} if self.array else {"name": self.name, "value": self.value}


def _simulator_measurements() -> dict[str, Measurement]:
    return {name: Measurement(path=f"$.measurements.{name}") for name in ("temperature", "humidity", "pressure",
                                                                         "battery")}


class Contract(_Section):
    """The telemetry contract: where each field of an event is in its JSON payload, which measurements it carries
    and what the job computes of them. The default is the simulator's nested payload (`streamdash.events`)."""

    device_id: FieldPath = "$.deviceId"
    # The group every device belongs to: InfluxDB's `site` tag and the site-level windows.
    site: FieldPath = "$.site"
    device_type: FieldPath | None = "$.deviceType"  # unset, absent or null: `default_device_type`
    default_device_type: str = Field(default="unknown", min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\\]+$")
    event_time: FieldPath = "$.eventTime"
    # iso8601: a string with a date, a time and an offset (Z or +hh:mm); epoch_ms: an integer; epoch_s: a number.
    event_time_formats: list[Literal["iso8601", "epoch_ms", "epoch_s"]] = Field(default=["iso8601", "epoch_ms"],
                                                                                 min_length=1)
    # A per-device counter, part of the deduplication key when set (then required in every event).
    sequence: FieldPath | None = "$.seq"
    # Drop re-deliveries: the same (device, sequence, event time) within the watermark counts once.
    deduplicate: bool = True
    schema_version: SchemaVersion | None = SchemaVersion()  # unset: not checked
    measurements: dict[Name, Measurement] = Field(default_factory=_simulator_measurements, min_length=1,
                                                  max_length=100)
    # Extra low-cardinality tags carried onto device points, e.g. {firmware = "$.fw.channel"}: strings, integers
    # or booleans; absent or null leaves the tag out.
    tags: dict[Name, FieldPath] = Field(default={}, max_length=10)
    statistics: list[Literal[STATISTIC_NAMES]] = Field(default=list(STATISTIC_NAMES), min_length=1)
    # A measurement value of the wrong type, not finite or out of its range: the record is a dead letter
    # (`dead_letter`), or only the value is dropped and counted (`drop_value`: pipeline_progress' dropped_values_*;
    # a record left with no value is still a dead letter, with the first such value's reason).
    bad_values: Literal["dead_letter", "drop_value"] = "dead_letter"
    # What `header:` fields hold: AMQP encodings (IoT Hub and the Azure SDKs through Event Hubs), a Kafka producer's
    # text (`plain`), or either, told apart by the bytes (`auto`; `transforms.headers`).
    header_encoding: Literal["auto", "amqp", "plain"] = "auto"
    # Long records (one reading per record, or an array of readings): where a reading's name and value are.
    readings: Readings | None = None

    @field_validator("device_type", "sequence", "schema_version", mode="before")
    @classmethod
    def _none_when_empty(cls, value: Any) -> Any:
        """TOML has no null: `sequence = ""` or `schema_version = false` says the payload has no such field."""
        return None if value in ("", False) else value

    @model_validator(mode="after")
    def _consistent(self) -> Contract:
        if len(set(self.event_time_formats)) != len(self.event_time_formats):
            raise ValueError("event_time_formats repeat")
        if {"epoch_ms", "epoch_s"} <= set(self.event_time_formats):
            raise ValueError("event_time_formats can have one epoch unit only (a number cannot say which it is)")
        if len(set(self.statistics)) != len(self.statistics):
            raise ValueError("statistics repeat")
        return self

    @model_validator(mode="after")
    def _measurements_placed(self) -> Contract:
        """A wide record's measurements each have a path; a long record's are named by its readings."""
        for name, measurement in self.measurements.items():
            if self.readings is None and measurement.path is None:
                raise ValueError(f"measurements.{name}: needs a path (or contract.readings, for long records)")
            if self.readings is not None and measurement.path is not None:
                raise ValueError(f"measurements.{name}: a path and contract.readings exclude each other (the "
                                 "readings name their measurement)")
            if self.readings is None and measurement.reading is not None:
                raise ValueError(f"measurements.{name}: reading names a long record's measurement: set "
                                 "contract.readings too")
        names = [(f"measurements.{name}", self.reading_names()[name]) for name in self.measurements]
        repeated = next((f"{a} and {b}" for i, (a, x) in enumerate(names) for b, y in names[i + 1:] if x == y), None)
        if self.readings is not None and repeated:
            raise ValueError(f"{repeated}: the same reading name")
        return self

    @model_validator(mode="after")
    def _names_apart(self) -> Contract:
        """Measurements and tags become columns, and Spark resolves columns in any case."""
        clash = sorted(name for name in [*self.measurements, *self.tags] if columns.reserved(name))
        if clash:
            raise ValueError(f"{', '.join(clash)}: reserved (in any case) for the job's own columns and InfluxDB keys")
        named = [*(f"measurements.{name}" for name in self.measurements), *(f"tags.{name}" for name in self.tags)]
        shared = _same_in_any_case([(field, field.split(".", 1)[1]) for field in named], exact_too=True)
        fields = {f"{m}_{s}".lower() for m in self.measurements for s in STATISTIC_NAMES}
        shared = shared or next((f"tags.{name} and a field" for name in self.tags if name.lower() in fields), None)
        if shared:
            raise ValueError(f"{shared}: measurements, tags and fields need names that differ in more than case "
                             "(Spark's column names do not tell case apart)")
        return self

    @model_validator(mode="after")
    def _paths_apart(self) -> Contract:
        """Payload keys become struct fields of the parse, and Spark resolves those in any case too."""
        readings = self.readings.paths() if self.readings else {}
        paths = {"device_id": self.device_id, "site": self.site, "device_type": self.device_type,
                 "event_time": self.event_time, "sequence": self.sequence,
                 "schema_version": self.schema_version and self.schema_version.path,
                 **{f"measurements.{name}": m.path for name, m in self.measurements.items()},
                 **{f"tags.{name}": path for name, path in self.tags.items()},
                 **{f"readings.{field}": path for field, path in readings.items()}}
        if any(path == TIMESTAMP for field, path in paths.items() if field != "event_time"):
            raise ValueError("'timestamp' (the broker's) can only be the event_time")
        keys = [(field, tuple(json_path_segments(path))) for field, path in paths.items() if path and in_body(path)]
        shared = _same_in_any_case([(field, segments[:depth]) for field, segments in keys
                                    for depth in range(1, len(segments) + 1)])
        if shared:
            raise ValueError(f"{shared}: payload keys that differ only in case are not supported (Spark's field "
                             "names do not tell case apart)")
        corrupt = [field for field, segments in keys if segments[0].lower() == columns.CORRUPT_RECORD]
        if corrupt:
            raise ValueError(f"{', '.join(corrupt)}: the key {columns.CORRUPT_RECORD} is the JSON parse's own")
        return self

    def paths(self) -> list[str]:
        """Every path the contract reads a field from."""
        return [self.device_id, self.site, self.event_time, *filter(None, (self.device_type, self.sequence)),
                *([self.schema_version.path] if self.schema_version else []),
                *(m.path for m in self.measurements.values() if m.path), *self.tags.values()]

    def reads_headers(self) -> bool:
        return any(path.startswith(HEADER_PREFIX) for path in self.paths())

    def reading_names(self) -> dict[str, str]:
        """Each measurement's name in long records' readings."""
        return {name: m.reading or name for name, m in self.measurements.items()}

    def one_reading_per_record(self) -> bool:
        """Long records of one reading each: a device sends several records at one time, told apart by the name."""
        return self.readings is not None and self.readings.array is None

    def deduplication_key(self) -> tuple[str, ...] | None:
        """Two records are the same event when these columns are equal (`events.DEDUPLICATION_KEY`, and the
        reading's name where a record is one reading); None where the contract does not deduplicate."""
        if not self.deduplicate:
            return None
        return (*DEDUPLICATION_KEY, *((columns.READING,) if self.one_reading_per_record() else ()))

    def stat_columns(self) -> tuple[str, ...]:
        """The fields of a point besides `count`: <measurement>_<statistic>, in order."""
        return tuple(f"{m}_{s}" for m in self.measurements for s in STATISTIC_NAMES if s in self.statistics)


class Validation(_Section):
    """What makes a record a valid event beyond the contract's fields and their JSON types."""

    max_event_bytes: int = Field(default=65536, gt=0, le=100 * 1024 * 1024)
    max_identifier_length: int = Field(default=128, gt=0, le=4096)
    # eventTime against a clock no device controls (see `transforms.parse`): the broker's append time where it
    # stamps one, else the micro-batch's time. Ahead must stay below `aggregation.watermark`, so that a fast clock
    # can never move the watermark past an on-time event of another device.
    max_event_time_ahead: Duration("1 day") = "5 seconds"
    max_event_time_behind: Duration("3650 days") = "7 days"
    # An event further ahead: a dead letter (`event_time_out_of_range`), or counted and taken at the reference time.
    early_events: Literal["dead_letter", "adjust"] = "dead_letter"


class InfluxDBSink(_Section):
    url: str = Field(pattern=r"^https?://\S+$", max_length=4096)
    org: str = "streamdash"
    bucket: str = Field(pattern=r"^\S.*$", max_length=512)
    token: SecretStr
    batch_size: int = Field(default=5000, gt=0, le=100000)
    # Batches in flight at once from each partition: InfluxDB parses and indexes them on as many cores, while the
    # executor formats the next lines.
    concurrent_writes: int = Field(default=2, ge=1, le=16)
    # How long writes keep retrying an unavailable InfluxDB before the job fails (and Databricks retries it).
    max_outage: Duration("7 days") = "15 minutes"
    retry_initial_delay_s: Seconds = 0.5
    retry_max_delay_s: Seconds = 30.0
    timeout_s: Seconds = 30.0


class GrafanaLiveSink(_Section):
    """Optional: push each micro-batch's windows to Grafana Live (`sinks.grafana_live`)."""

    url: str = Field(pattern=r"^https?://\S+$", max_length=4096)
    token: SecretStr  # a service account token with the Admin role (what Live pushes need)
    stream_id: str = Field(default="streamdash", pattern=r"^[A-Za-z0-9_-]+$")
    measurements: list[str] = Field(default=["telemetry_site"], min_length=1)
    max_lines_per_push: int = Field(default=1000, gt=0, le=100_000)
    max_retries: int = Field(default=2, ge=0, le=100)
    retry_initial_delay_s: Seconds = 0.2
    retry_max_delay_s: Seconds = 2.0
    timeout_s: Seconds = 5.0


class DeadLetterSink(_Section):
    path: str = Field(min_length=1)
    format: Literal["json", "delta"] = "json"


# A Delta table: a table name (Unity Catalog: catalog.schema.table) or a path (anything with a `/`).
DeltaTable = Annotated[str, Field(pattern=r"^(\S*/\S*|[A-Za-z_][\w]*(\.[A-Za-z_][\w]*){0,2})$", max_length=4096)]


class Lakehouse(_Section):
    """Delta tables beside InfluxDB, each written by a streaming query of its own (`pipeline`): every record as read
    (bronze), and, computed from bronze, every window with a lateness allowance of its own (gold). Unset: not
    written."""

    bronze: DeltaTable | None = None
    gold: DeltaTable | None = None  # computed from bronze, so it needs bronze
    trigger_interval: Duration("1 hour") = "10 seconds"  # bronze's and gold's
    # How late an event may come and still count in gold (the dashboards' is `aggregation.watermark`): gold is the
    # late-data-complete record.
    gold_lateness: Duration("7 days") = "1 hour"

    @model_validator(mode="after")
    def _gold_reads_bronze(self) -> Lakehouse:
        if self.gold and not self.bronze:
            raise ValueError("gold is computed from the bronze table: set lakehouse.bronze too")
        return self


class Limits(_Section):
    """Limits per device, device type, site or fleet (`streamdash.limits`): each device window's `statistic` judged
    against them and written to `telemetry_limits`, for one alert rule with every device's own limits."""

    path: str = Field(min_length=1)  # a CSV file with a header row, or a Delta table (`format`)
    format: Literal["csv", "delta"] = "csv"
    statistic: Literal[STATISTIC_NAMES] = "mean"
    # How often the job reads the table again while it runs: a changed limit takes effect within this much time.
    reread_every: Duration("1 day") = "30 seconds"


class Job(_Section):
    name: str = "streamdash"
    checkpoint_location: str = Field(min_length=1)
    trigger_interval: Duration("1 hour") = "500 milliseconds"
    # Partitions of the aggregation's state; unset: the cores Spark has. Frozen into the checkpoint at its first run.
    shuffle_partitions: int | None = Field(default=None, gt=0, le=10_000)
    self_metrics: bool = True
    # How long a stop (SIGTERM, Ctrl-C) waits for the batch in flight to commit; past it the batch is cancelled, to
    # be replayed from the checkpoint on the next start, and the job exits 1. A backlog batch of 200,000 records
    # takes minutes on a busy machine.
    stop_timeout: Duration("1 day") = "10 minutes"
    # Which of the streaming queries this process runs (`pipeline.QUERIES`); unset: the dashboards' and one for each
    # configured Delta table. ["dashboards"] or ["bronze", "gold"] split them over two jobs.
    queries: list[Literal["dashboards", "bronze", "gold"]] | None = Field(default=None, min_length=1)
    # A checkpoint whose state was written under another contract (a measurement, tag or statistic added or
    # removed): `refuse` it, or `carry_over` (Kafka and bronze only): new state starts where the old had committed,
    # at its watermark, and the windows open then are recomputed from bronze (`streamdash.carry_over`).
    on_contract_change: Literal["refuse", "carry_over"] = "refuse"


def _source_kind(source: Any) -> str:
    """A source is Kafka (Event Hubs' Kafka endpoint included) unless its `kind` says otherwise."""
    return (source.get("kind") if isinstance(source, dict) else getattr(source, "kind", None)) or "kafka"


class Settings(_Section):
    source: Annotated[Annotated[KafkaSource, Tag("kafka")] | Annotated[EventHubsNativeSource, Tag("eventhubs_native")],
                      Discriminator(_source_kind)]
    contract: Contract = Contract()
    aggregation: Aggregation = Aggregation()
    validation: Validation = Validation()
    influxdb: InfluxDBSink
    grafana_live: GrafanaLiveSink | None = None
    dead_letter: DeadLetterSink
    lakehouse: Lakehouse = Lakehouse()
    limits: Limits | None = None
    job: Job

    @model_validator(mode="after")
    def _ahead_tolerance_below_the_watermark(self) -> Settings:
        """An event at most (watermark - ahead) old when read is never late, whatever other devices' clocks say."""
        if duration_seconds(self.validation.max_event_time_ahead) >= duration_seconds(self.aggregation.watermark):
            raise ValueError("validation.max_event_time_ahead must be shorter than aggregation.watermark (a clock "
                             "that far ahead would move the watermark past other devices' on-time events)")
        return self

    @model_validator(mode="after")
    def _carry_over_recomputes_from_bronze(self) -> Settings:
        if self.job.on_contract_change == "carry_over" and (self.source.kind != "kafka" or not self.lakehouse.bronze):
            raise ValueError("job.on_contract_change = \"carry_over\" recomputes the windows open at the change "
                             "from bronze and starts at Kafka offsets: it needs lakehouse.bronze and a Kafka source")
        return self

    @model_validator(mode="after")
    def _limits_judge_a_computed_statistic(self) -> Settings:
        if self.limits and self.limits.statistic not in self.contract.statistics:
            raise ValueError(f"limits.statistic {self.limits.statistic!r} is not among contract.statistics")
        return self

    @model_validator(mode="after")
    def _headers_from_kafka(self) -> Settings:
        if self.source.kind == "eventhubs_native" and self.contract.reads_headers():
            raise ValueError("contract fields from headers ('header:...') need source.kind = 'kafka' (the Event "
                             "Hubs connector gives its properties as a map, which the job does not read)")
        return self

    @model_validator(mode="after")
    def _queries_have_their_tables(self) -> Settings:
        missing = [name for name in self.job.queries or [] if name != "dashboards"
                   and getattr(self.lakehouse, name) is None]
        if missing:
            raise ValueError(f"job.queries names {', '.join(missing)}: set lakehouse.{missing[0]} for it")
        if self.lakehouse.gold and (duration_seconds(self.lakehouse.gold_lateness)
                                    < duration_seconds(self.aggregation.watermark)):
            raise ValueError("lakehouse.gold_lateness must be at least aggregation.watermark (gold holds what the "
                             "dashboards hold, and the events that came too late for them)")
        return self


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_REF = re.compile(r"\{\{secrets/([^/{}]+)/([^/{}]+)\}\}")


def default_of(model: type[BaseModel], field: str) -> Any:
    """A field's default as its model states it, for code that must agree with it (the writers, the benchmark)."""
    return model.model_fields[field].get_default(call_default_factory=True)


def load_settings(env: str, conf_dir: str | Path = "conf", overrides: list[str] | None = None,
                  environment: Mapping[str, str] = os.environ) -> Settings:
    """`conf/<env>.toml`, on top of the file it `extends` (if any), with `overrides` on top; `${VAR}` read from
    `environment`."""
    raw, sources = read_layers(Path(conf_dir), env)
    overridden = {_apply_override(raw, override) for override in overrides or []}
    return settings_from_dict(_resolve(raw, "", environment), source=" on ".join(sources), overridden=overridden)


def read_layers(conf_dir: Path, env: str, seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], list[str]]:
    """A configuration file, and the paths it was read from. `extends = "<env>"` at its top puts it on top of
    `conf/<env>.toml`: each of its sections' fields replaces the base's (a table, such as `contract.measurements`,
    whole), so a new fleet's file holds its contract and what else differs, not a copy of the base."""
    path = conf_dir / f"{env}.toml"
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        known = sorted(p.stem for p in conf_dir.glob("*.toml"))
        raise ConfigError(f"no configuration for environment {env!r}: {path} does not exist (known: {known})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    base = raw.pop("extends", None)
    if base is None:
        return raw, [str(path)]
    if not isinstance(base, str) or base in (*seen, env):
        raise ConfigError(f"{path}: extends must name another environment, and no file may extend itself "
                          f"(through {' -> '.join((*seen, env))})")
    merged, sources = read_layers(conf_dir, base, (*seen, env))
    for section, fields in raw.items():
        merged[section] = ({**merged[section], **fields}
                           if isinstance(fields, dict) and isinstance(merged.get(section), dict) else fields)
    return merged, [str(path), *sources]


def settings_from_dict(raw: dict[str, Any], source: str = "configuration",
                       overridden: set[str] | frozenset[str] = frozenset()) -> Settings:
    """Validate; each problem names its field and where its value came from (`--set` or `source`), never the
    value itself (it may be a secret)."""
    try:
        return Settings.model_validate(raw)
    except ValidationError as err:
        problems = []
        for error in err.errors(include_input=False, include_url=False):
            # A discriminated union adds the variant's tag (`source.kafka.topic`); `--set` names `source.topic`.
            key = ".".join(str(p) for p in error["loc"] if p not in ("kafka", "eventhubs_native"))
            set_here = any(name == key or name.startswith(f"{key}.") for name in overridden)
            origin = f"--set {key}" if set_here else source
            problems.append(f"{'.'.join(str(p) for p in error['loc'])} ({origin}): {error['msg']}")
        raise ConfigError(f"invalid configuration: {'; '.join(problems)}") from None


def _apply_override(raw: dict[str, Any], override: str) -> str:
    """Set one `section.field=value` in `raw`; returns the key."""
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"an override must look like section.field=value, got {key.strip()!r}")
    *sections, field = key.strip().split(".")
    target = raw
    for section in sections:
        target = target.setdefault(section, {})
    try:
        target[field] = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        target[field] = value  # a bare string
    return key.strip()


def _resolve(value: Any, where: str, environment: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: _resolve(item, f"{where}.{key}" if where else key, environment) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, where, environment) for item in value]
    if not isinstance(value, str):
        return value
    if _SECRET_REF.search(value):
        raise ConfigError(f"{where}: a {{{{secrets/...}}}} reference is read by Databricks in a cluster's environment "
                          "variables, not here: set it as one there (resources/streamdash.job.yml) and write ${NAME}")

    def from_env(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in environment:
            return environment[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set")

    return _ENV_REF.sub(from_env, value)
