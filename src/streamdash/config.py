"""One typed, validated configuration for the job, loaded from `conf/<env>.toml`.

String values may use `${VAR}` / `${VAR:-default}` (environment) and `{{secrets/<scope>/<key>}}` (a Databricks
secret, see `streamdash.secrets`). `--set section.field=value` overrides a value after the file is read. A bad
configuration fails at start with one message naming each bad field, and never echoes a value.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from streamdash.errors import ConfigError
from streamdash.events import MEASUREMENTS

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


def _check_duration(text: str) -> str:
    duration_seconds(text)
    return text


Duration = Annotated[str, AfterValidator(_check_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSource(_Section):
    """Apache Kafka, or Azure Event Hubs through its Kafka endpoint (`security = "eventhubs"`)."""

    kind: Literal["kafka"] = "kafka"
    bootstrap_servers: str = Field(min_length=1)
    topic: str = Field(min_length=1)
    security: Literal["plaintext", "eventhubs"] = "plaintext"
    connection_string: SecretStr | None = None
    ca_file: str | None = None
    consumer_group: str | None = None
    starting_offsets: str = "latest"
    max_offsets_per_trigger: int | None = Field(default=None, gt=0)
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
    max_events_per_trigger: int | None = Field(default=None, gt=0)


class Aggregation(_Section):
    window_sizes: list[str] = Field(default=["10 seconds", "1 minute"], min_length=1)
    watermark: Duration = "30 seconds"
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


class Validation(_Section):
    """What makes a record a valid event beyond its JSON types (the contract is in `streamdash.events`)."""

    max_event_bytes: int = Field(default=65536, gt=0)
    max_identifier_length: int = Field(default=128, gt=0)
    # eventTime against a clock no device controls (see `transforms.parse`): the broker's append time where it
    # stamps one, else the micro-batch's time. Ahead must stay below `aggregation.watermark`, so that a fast clock
    # can never move the watermark past an on-time event of another device.
    max_event_time_ahead: Duration = "5 seconds"
    max_event_time_behind: Duration = "7 days"
    # An event further ahead: a dead letter (`event_time_out_of_range`), or counted and taken at the reference time.
    early_events: Literal["dead_letter", "adjust"] = "dead_letter"
    # Optional plausible range per measurement, e.g. {temperature = [-80, 150]}: values outside are dead letters.
    ranges: dict[str, tuple[float, float]] = {}

    @field_validator("ranges")
    @classmethod
    def _known_measurements(cls, ranges: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (low, high) in ranges.items():
            if name not in MEASUREMENTS:
                raise ValueError(f"unknown measurement {name!r} (known: {', '.join(MEASUREMENTS)})")
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"the range of {name} must be two finite numbers, low <= high")
        return ranges


class InfluxDBSink(_Section):
    url: str = Field(pattern=r"^https?://")
    org: str = "streamdash"
    bucket: str = Field(min_length=1)
    token: SecretStr
    batch_size: int = Field(default=5000, gt=0, le=100000)
    # How long writes keep retrying an unavailable InfluxDB before the job fails (and Databricks retries it).
    max_outage: Duration = "15 minutes"
    retry_initial_delay_s: float = Field(default=0.5, gt=0)
    retry_max_delay_s: float = Field(default=30.0, gt=0)
    timeout_s: float = Field(default=30.0, gt=0)


class GrafanaLiveSink(_Section):
    """Optional: push each micro-batch's windows to Grafana Live (`sinks.grafana_live`)."""

    url: str = Field(pattern=r"^https?://")
    token: SecretStr  # a service account token with the Admin role (what Live pushes need)
    stream_id: str = Field(default="streamdash", pattern=r"^[A-Za-z0-9_-]+$")
    measurements: list[str] = Field(default=["telemetry_site"], min_length=1)
    max_lines_per_push: int = Field(default=1000, gt=0)
    max_retries: int = Field(default=2, ge=0)
    retry_initial_delay_s: float = Field(default=0.2, gt=0)
    retry_max_delay_s: float = Field(default=2.0, gt=0)
    timeout_s: float = Field(default=5.0, gt=0)


class DeadLetterSink(_Section):
    path: str = Field(min_length=1)
    format: Literal["json", "delta"] = "json"


class Job(_Section):
    name: str = "streamdash"
    checkpoint_location: str = Field(min_length=1)
    trigger_interval: Duration = "500 milliseconds"
    # Partitions of the aggregation's state; unset: the cores Spark has. Frozen into the checkpoint at its first run.
    shuffle_partitions: int | None = Field(default=None, gt=0)
    self_metrics: bool = True


class Settings(_Section):
    source: Annotated[KafkaSource | EventHubsNativeSource, Field(discriminator="kind")]
    aggregation: Aggregation = Aggregation()
    validation: Validation = Validation()
    influxdb: InfluxDBSink
    grafana_live: GrafanaLiveSink | None = None
    dead_letter: DeadLetterSink
    job: Job

    @model_validator(mode="after")
    def _ahead_tolerance_below_the_watermark(self) -> Settings:
        """An event at most (watermark - ahead) old when read is never late, whatever other devices' clocks say."""
        if duration_seconds(self.validation.max_event_time_ahead) >= duration_seconds(self.aggregation.watermark):
            raise ValueError("validation.max_event_time_ahead must be shorter than aggregation.watermark (a clock "
                             "that far ahead would move the watermark past other devices' on-time events)")
        return self


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_REF = re.compile(r"\{\{secrets/([^/{}]+)/([^/{}]+)\}\}")


def load_settings(env: str, conf_dir: str | Path = "conf", overrides: list[str] | None = None) -> Settings:
    path = Path(conf_dir) / f"{env}.toml"
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        known = sorted(p.stem for p in Path(conf_dir).glob("*.toml"))
        raise ConfigError(f"no configuration for environment {env!r}: {path} does not exist (known: {known})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    overridden = {_apply_override(raw, override) for override in overrides or []}
    return settings_from_dict(_resolve(raw, ""), source=str(path), overridden=overridden)


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
            origin = f"--set {key}" if key in overridden else source
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


def _resolve(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        return {key: _resolve(item, f"{where}.{key}" if where else key) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, where) for item in value]
    if not isinstance(value, str):
        return value

    def from_env(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set")

    def from_secret_scope(match: re.Match) -> str:
        from streamdash.secrets import get_secret

        return get_secret(match.group(1), match.group(2), where)

    return _SECRET_REF.sub(from_secret_scope, _ENV_REF.sub(from_env, value))
