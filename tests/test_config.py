"""Configuration: every environment loads; bad values fail with one message naming the field, never the secret."""

from __future__ import annotations

import re

import pytest

from streamdash.config import load_settings, window_label
from streamdash.errors import ConfigError
from streamdash_toolbox.testing import REPO

CONF = REPO / "conf"
SECRET = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=TOPSECRET"


def test_local_loads_with_defaults(monkeypatch):
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    monkeypatch.delenv("STREAMDASH_KAFKA_BOOTSTRAP", raising=False)
    settings = load_settings("local", CONF)
    assert settings.source.bootstrap_servers == "127.0.0.1:9092"
    assert settings.influxdb.token.get_secret_value() == "u:p"
    assert [window_label(w) for w in settings.aggregation.window_sizes] == ["10s", "1m"]


def test_secrets_come_from_the_environment_and_are_never_shown(monkeypatch):
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    monkeypatch.setenv("EVENTHUBS_CONNECTION_STRING", SECRET)
    settings = load_settings("local", CONF, ["source.security=eventhubs",
                                             "source.connection_string=${EVENTHUBS_CONNECTION_STRING}"])
    assert settings.source.connection_string.get_secret_value() == SECRET
    assert "TOPSECRET" not in repr(settings) and "TOPSECRET" not in str(settings)


def test_a_notebook_reads_a_secret_the_environment_lacks_from_the_scope(monkeypatch):
    """An interactive cluster has not the job cluster's secret variables: the notebook takes them from the scope
    the job's come from, and says which variable to set when the scope cannot give one."""
    from streamdash.notebook import ScopeEnvironment

    class Scope:
        def get(self, scope, key):
            if (scope, key) != ("streamdash", "eventhubs-connection-string"):
                raise PermissionError(key)
            return SECRET

    dbutils = type("Dbutils", (), {"secrets": Scope()})()
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    monkeypatch.delenv("EVENTHUBS_CONNECTION_STRING", raising=False)
    eventhubs = ["source.security=eventhubs", "source.connection_string=${EVENTHUBS_CONNECTION_STRING}"]
    settings = load_settings("local", CONF, eventhubs, ScopeEnvironment(dbutils, "streamdash"))
    assert settings.source.connection_string.get_secret_value() == SECRET
    monkeypatch.delenv("INFLUXDB_TOKEN")
    with pytest.raises(ConfigError, match=r"INFLUXDB_TOKEN is not set, and the secret streamdash/influxdb-token is "
                                          r"unavailable \(PermissionError\): set INFLUXDB_TOKEN"):
        load_settings("local", CONF, eventhubs, ScopeEnvironment(dbutils, "streamdash"))


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
    conf.write_text((CONF / "local.toml").read_text() + f'\n[aggregation]\nwatermark = "{value}"\n')
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
    with pytest.raises(ConfigError, match=r"source.connection_string: a \{\{secrets/...\}\} reference is read by "
                                          r"Databricks in a cluster's environment variables"):
        load_settings("local", CONF, ["source.security=eventhubs",
                                      "source.connection_string={{secrets/streamdash/eventhubs-connection-string}}"])


def test_unknown_environment_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"known: \['dev', 'local', 'prod', 'scala212'\]"):
        load_settings("staging", CONF)


def test_a_fleet_s_file_extends_an_environment_with_its_contract_alone(monkeypatch, tmp_path):
    """A new fleet on the local stack: its file names what differs (`extends = "local"`); the rest is local's,
    and its measurements replace the simulator's instead of joining them."""
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    (tmp_path / "local.toml").write_text((CONF / "local.toml").read_text())
    (tmp_path / "pumps.toml").write_text('extends = "local"\n[source]\ntopic = "pumps"\n'
                                         '[contract]\ndevice_id = "$.pump"\nsequence = ""\nschema_version = false\n'
                                         '[contract.measurements.pressure]\npath = "$.bar"\n')
    local, pumps = load_settings("local", tmp_path), load_settings("pumps", tmp_path, ["job.name=pumps"])
    assert (pumps.source.topic, pumps.contract.device_id, list(pumps.contract.measurements)) == (
        "pumps", "$.pump", ["pressure"])
    assert pumps.source.bootstrap_servers == local.source.bootstrap_servers and pumps.job.name == "pumps"
    assert pumps.contract.site == local.contract.site and pumps.influxdb == local.influxdb
    (tmp_path / "loop.toml").write_text('extends = "loop"\n')
    with pytest.raises(ConfigError, match="no file may extend itself"):
        load_settings("loop", tmp_path)
    (tmp_path / "orphan.toml").write_text('extends = "staging"\n')
    with pytest.raises(ConfigError, match="no configuration for environment 'staging'"):
        load_settings("orphan", tmp_path)
    (tmp_path / "slow.toml").write_text('extends = "pumps"\n[job]\ntrigger_interval = "1 week"\n')
    with pytest.raises(ConfigError, match=r"trigger_interval \(.*slow\.toml on .*pumps\.toml on .*local\.toml\)"):
        load_settings("slow", tmp_path)


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


def test_a_contract_is_configured_in_the_file_and_with_set(monkeypatch, tmp_path):
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    conf = tmp_path / "fleet.toml"
    conf.write_text((CONF / "local.toml").read_text() + """
[contract]
device_id = "$.id"
site = "$.location.building"
event_time = "$.ts"
event_time_formats = ["epoch_s"]

[contract.measurements]
co2 = {path = "$.co2", range = [0, 5000]}
rpm = {path = "$.rpm"}
""")
    settings = load_settings("fleet", tmp_path, ["contract.tags.firmware=$.fw", 'contract.sequence=""',
                                                 "contract.schema_version=false"])
    contract = settings.contract
    assert (contract.device_id, contract.site, contract.event_time_formats) == ("$.id", "$.location.building",
                                                                                  ["epoch_s"])
    assert list(contract.measurements) == ["co2", "rpm"] and contract.measurements["co2"].range == (0, 5000)
    assert contract.tags == {"firmware": "$.fw"} and contract.sequence is None and contract.schema_version is None
    assert contract.device_type == "$.deviceType"  # not in the file: the default
    assert contract.stat_columns()[:2] == ("co2_mean", "co2_min")


@pytest.mark.parametrize(("override", "message"), [
    ("contract.device_id=deviceId", "contract.device_id"),
    ("contract.site=$.a..b", "contract.site"),
    ("contract.event_time=$" + ".a" * 9, "at most 8 keys deep"),
    ('contract.event_time_formats=["epoch_ms", "epoch_s"]', "one epoch unit"),
    ('contract.event_time_formats=["rfc822"]', "contract.event_time_formats"),
    ("contract.event_time_formats=[]", "contract.event_time_formats"),
    ('contract.measurements={site = {path = "$.site"}}', "reserved"),
    ('contract.measurements={"1st" = {path = "$.x"}}', "contract.measurements.1st"),
    ("contract.measurements={}", "contract.measurements"),
    ('contract.measurements={co2 = {path = "$.co2", range = [5, 1]}}', "low <= high"),
    ('contract.measurements={Site = {path = "$.s"}}', "Site: reserved (in any case)"),
    ('contract.measurements={key = {path = "$.k"}}', "key: reserved"),
    ('contract.measurements={INGESTED_AT = {path = "$.k"}}', "INGESTED_AT: reserved"),
    ('contract.measurements={newest_event_ns = {path = "$.k"}}', "newest_event_ns: reserved"),
    ('contract.tags={key_device_id = "$.k"}', "key_device_id: reserved"),
    ('contract.measurements={temp = {path = "$.a"}, Temp = {path = "$.b"}}',
     "measurements.temp and measurements.Temp: measurements, tags and fields need names that differ"),
    ('contract.tags={temperature = "$.t"}', "measurements.temperature and tags.temperature"),
    ('contract.tags={Temperature = "$.t"}', "measurements.temperature and tags.Temperature"),
    ('contract.tags={fw = "$.a", FW = "$.b"}', "tags.fw and tags.FW"),
    ('contract.tags={temperature_P95 = "$.t"}', "tags.temperature_P95 and a field"),
    ('contract.measurements={t1 = {path = "$.temp"}, t2 = {path = "$.Temp"}}',
     "measurements.t1 and measurements.t2: payload keys that differ only in case"),
    ('contract.measurements={t1 = {path = "$.m.t1"}, t2 = {path = "$.M.t2"}}', "measurements.t1 and measurements.t2"),
    ('contract.tags={fw = "$.DEVICEID"}', "device_id and tags.fw"),
    ('contract.tags={fw = "$._Corrupt_Record"}', "tags.fw: the key _corrupt_record is the JSON parse's own"),
    ('contract.statistics=["mean", "median"]', "contract.statistics"),
    ('contract.statistics=["mean", "mean"]', "statistics repeat"),
    ("contract.default_device_type=", "contract.default_device_type"),
])
def test_a_bad_contract_names_its_field(monkeypatch, override, message):
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings("local", CONF, [override])


HUGE = "98765432109876543210"


@pytest.mark.parametrize(("override", "field"), [
    (f"aggregation.watermark={HUGE} days", "aggregation.watermark"),
    (f"job.trigger_interval={HUGE} days", "job.trigger_interval"),
    ("job.trigger_interval=2 hours", "job.trigger_interval"),
    (f"job.shuffle_partitions={HUGE}", "job.shuffle_partitions"),
    ("job.shuffle_partitions=10001", "job.shuffle_partitions"),
    ("source.max_offsets_per_trigger=9223372036854775808", "source.kafka.max_offsets_per_trigger"),
    ("validation.max_event_bytes=9223372036854775808", "validation.max_event_bytes"),
    ("validation.max_identifier_length=4097", "validation.max_identifier_length"),
    (f"validation.max_event_time_ahead={HUGE} days", "validation.max_event_time_ahead"),
    ("validation.max_event_time_behind=3651 days", "validation.max_event_time_behind"),
    ("influxdb.timeout_s=inf", "influxdb.timeout_s"),
    ("influxdb.timeout_s=nan", "influxdb.timeout_s"),
    ("influxdb.timeout_s=1e300", "influxdb.timeout_s"),
    ("influxdb.retry_max_delay_s=3601", "influxdb.retry_max_delay_s"),
    ("influxdb.max_outage=8 days", "influxdb.max_outage"),
    ('source.topic=" "', "source.kafka.topic"),
    ('source.topic="a b"', "source.kafka.topic"),
    ('source.bootstrap_servers=" "', "source.kafka.bootstrap_servers"),
    ('influxdb.bucket=" "', "influxdb.bucket"),
    ("aggregation.window_sizes=" + str([f"{n} seconds" for n in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)]),
     "aggregation.window_sizes"),
])
def test_every_value_has_the_bound_its_consumer_needs(monkeypatch, override, field):
    """Refused at load with one line naming the field, never the value, instead of failing later in Spark or the
    InfluxDB client (or overflowing a long)."""
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    with pytest.raises(ConfigError) as error:
        load_settings("local", CONF, [override.replace("'", '"')])
    message = str(error.value)
    assert message.startswith("invalid configuration: ") and f"{field} (--set " in message and "\n" not in message
    assert HUGE not in message and "Traceback" not in message


def test_the_bounds_themselves_are_accepted(monkeypatch):
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    settings = load_settings("local", CONF, [
        "job.trigger_interval=1 hour", "job.shuffle_partitions=10000", "aggregation.watermark=1 day",
        "influxdb.timeout_s=3600", "validation.max_event_time_behind=3650 days", "influxdb.max_outage=7 days"])
    assert settings.job.shuffle_partitions == 10000 and settings.influxdb.timeout_s == 3600


def test_a_carry_over_needs_bronze_to_recompute_from(monkeypatch):
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    with pytest.raises(ConfigError, match=re.escape("it needs lakehouse.bronze and a Kafka source")):
        load_settings("local", CONF, ["job.on_contract_change=carry_over"])
    settings = load_settings("local", CONF, ["job.on_contract_change=carry_over", "lakehouse.bronze=/tmp/b"])
    assert settings.job.on_contract_change == "carry_over"


def test_limits_judge_a_statistic_the_job_computes(monkeypatch):
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    with pytest.raises(ConfigError, match=re.escape("limits.statistic 'p95' is not among contract.statistics")):
        load_settings("local", CONF, ["limits.path=limits.csv", 'contract.statistics=["mean"]',
                                      "limits.statistic=p95"])
    assert load_settings("local", CONF, ["limits.path=limits.csv"]).limits.statistic == "mean"


def test_an_unknown_section_given_with_set_is_blamed_on_the_set(monkeypatch):
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    with pytest.raises(ConfigError) as error:
        load_settings("local", CONF, ["sauce.topic=x"])
    assert "sauce (--set sauce)" in str(error.value) and "local.toml" not in str(error.value)


def test_a_password_in_a_url_is_never_printed(monkeypatch):
    from streamdash.config import redacted
    from streamdash.sinks.influxdb import InfluxWriteError, InfluxWriter
    from streamdash.sinks.retry import RetryPolicy
    from streamdash_toolbox.stack.process import free_port

    url = f"http://admin:hunter2@127.0.0.1:{free_port()}"
    assert redacted(url) == url.replace("admin:hunter2@", "***@") and redacted("http://h:1/p@q") == "http://h:1/p@q"
    writer = InfluxWriter(url=url, org="o", bucket="b/autogen", token="t", timeout_s=1,
                          retry=RetryPolicy(0.01, 0.01, max_retries=None, max_outage_s=0.2))
    assert "hunter2" not in repr(writer)
    with pytest.raises(InfluxWriteError) as error:
        writer.write_lines(["m f=1 1"])
    assert "***@127.0.0.1" in str(error.value) and "hunter2" not in str(error.value)
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    with pytest.raises(ConfigError) as error:
        load_settings("local", CONF, [f"influxdb.url={url}", "influxdb.batch_size=0"])
    assert "hunter2" not in str(error.value)
