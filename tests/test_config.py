"""Configuration: every environment loads; bad values fail with one message naming the field, never the secret."""

from __future__ import annotations

import pytest

from streamdash.config import load_settings, window_label
from streamdash.errors import ConfigError
from streamdash.secrets import secret_env_name

from .conftest import REPO

CONF = REPO / "conf"
SECRET = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=TOPSECRET"


def test_local_loads_with_defaults(monkeypatch):
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    monkeypatch.delenv("STREAMDASH_KAFKA_BOOTSTRAP", raising=False)
    settings = load_settings("local", CONF)
    assert settings.source.bootstrap_servers == "127.0.0.1:9092"
    assert settings.influxdb.token.get_secret_value() == "u:p"
    assert [window_label(w) for w in settings.aggregation.window_sizes] == ["10s", "1m"]


def test_secret_scope_references_resolve_from_the_environment_outside_databricks(monkeypatch):
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    monkeypatch.setenv(secret_env_name("streamdash", "eventhubs-connection-string"), SECRET)
    settings = load_settings("local", CONF, ["source.security=eventhubs",
                                             "source.connection_string={{secrets/streamdash/eventhubs-connection-string}}"])
    assert settings.source.connection_string.get_secret_value() == SECRET
    assert "TOPSECRET" not in repr(settings) and "TOPSECRET" not in str(settings)


def test_overrides_take_toml_values_and_bare_strings(monkeypatch):
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    settings = load_settings("local", CONF, ['aggregation.window_sizes=["5 seconds"]', "job.trigger_interval=1 second",
                                             "source.max_offsets_per_trigger=10", "dead_letter.format=delta"])
    assert settings.aggregation.window_sizes == ["5 seconds"]
    assert settings.job.trigger_interval == "1 second"
    assert settings.dead_letter.format == "delta"
    assert settings.source.max_offsets_per_trigger == 10


@pytest.mark.parametrize(("override", "field"), [
    ("aggregation.window_sizes=[\"ten seconds\"]", "aggregation.window_sizes"),
    ("influxdb.url=influx:8086", "influxdb.url"),
    ("influxdb.batch_size=0", "influxdb.batch_size"),
    ("source.security=kerberos", "source.kafka.security"),
    ("job.trigger_interval=soon", "job.trigger_interval"),
    ("dead_letter.format=parquet", "dead_letter.format"),
    ("job.unknown=1", "job.unknown"),
])
def test_bad_values_name_the_field(monkeypatch, override, field):
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    with pytest.raises(ConfigError) as error:
        load_settings("local", CONF, [override])
    assert field in str(error.value)


@pytest.mark.parametrize("value", ["banana", "TOPSECRET-1", "1 fortnight"])
def test_a_bad_value_is_never_echoed_and_its_origin_is_named(monkeypatch, tmp_path, value):
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    with pytest.raises(ConfigError) as error:
        load_settings("local", CONF, [f"aggregation.watermark={value}"])
    assert "aggregation.watermark (--set aggregation.watermark)" in str(error.value)
    assert value not in str(error.value) and "local.toml" not in str(error.value)
    conf = tmp_path / "staging.toml"
    conf.write_text((CONF / "local.toml").read_text().replace('watermark = "30 seconds"', f'watermark = "{value}"'))
    with pytest.raises(ConfigError) as error:
        load_settings("staging", tmp_path)
    assert f"aggregation.watermark ({conf})" in str(error.value) and value not in str(error.value)


def test_eventhubs_without_connection_string_is_refused_without_echoing_secrets(monkeypatch):
    monkeypatch.setenv("INFLUXDB_TOKEN", "token-secret")
    with pytest.raises(ConfigError) as error:
        load_settings("local", CONF, ["source.security=eventhubs"])
    assert "connection_string" in str(error.value)
    assert "token-secret" not in str(error.value)


def test_missing_environment_variable_and_secret_name_what_to_set(monkeypatch):
    monkeypatch.delenv("INFLUXDB_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"influxdb.token: environment variable INFLUXDB_TOKEN is not set"):
        load_settings("local", CONF)
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_RUNTIME_VERSION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", "/nonexistent/databrickscfg")  # no workspace configured here
    with pytest.raises(ConfigError, match="STREAMDASH_SECRET_STREAMDASH_EVENTHUBS_CONNECTION_STRING"):
        load_settings("local", CONF, ["source.security=eventhubs",
                                      "source.connection_string={{secrets/streamdash/eventhubs-connection-string}}"])


def test_unknown_environment_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"known: \['dev', 'local', 'prod', 'scala212'\]"):
        load_settings("staging", CONF)


@pytest.mark.parametrize("sizes", ['["10 seconds", "15 seconds"]', '["7 seconds", "1 minute"]', '["1500 ms"]'])
def test_window_sizes_must_divide_the_largest_and_be_whole_seconds(monkeypatch, sizes):
    """Every size is aggregated under the largest window in one stateful pass (`transforms.aggregate`)."""
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    with pytest.raises(ConfigError, match="aggregation.window_sizes"):
        load_settings("local", CONF, [f"aggregation.window_sizes={sizes}"])
    assert load_settings("local", CONF, ['aggregation.window_sizes=["10 seconds", "30 seconds", "5 minutes"]'])


@pytest.mark.parametrize("overrides", [["validation.max_event_time_ahead=30 seconds"],
                                       ["aggregation.watermark=5 seconds"],
                                       ["aggregation.watermark=1 minute", "validation.max_event_time_ahead=2 minutes"]])
def test_the_ahead_tolerance_must_be_shorter_than_the_watermark(monkeypatch, overrides):
    """Otherwise a device whose clock is that far ahead moves the watermark past other devices' on-time events."""
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    with pytest.raises(ConfigError, match="validation.max_event_time_ahead must be shorter than aggregation.watermark"):
        load_settings("local", CONF, overrides)
    assert load_settings("local", CONF, ["validation.max_event_time_ahead=29 seconds"])
