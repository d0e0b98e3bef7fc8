"""The local stack against its real servers: both Kafka listeners, InfluxDB, idempotent up, clean down."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer

from streamdash_toolbox.kafka_client import client_config
from streamdash_toolbox.stack import Stack, process
from streamdash_toolbox.testing import FREE_PORTS

CLI = [sys.executable, "-m", "streamdash_toolbox.cli"]
ALL_FREE = {"STREAMDASH_STACK_PORTS": ",".join(f"{name}=0" for name in FREE_PORTS)}


def _roundtrip(config: dict, topic: str, payload: bytes, timestamp_ms: int = 0,
               received_timestamps: list | None = None) -> list[bytes]:
    errors: list[str] = []
    producer = Producer({**config, "message.timeout.ms": 8000, "error_cb": lambda e: errors.append(str(e))})
    producer.produce(topic, payload, key=b"k", timestamp=timestamp_ms)
    assert producer.flush(15) == 0, errors
    consumer = Consumer({**config, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    received = []
    try:
        for _ in range(40):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                received.append(message.value())
                if received_timestamps is not None:
                    received_timestamps.append(message.timestamp())
                break
    finally:
        consumer.close()
    return received


def test_plaintext_listener_produces_and_consumes(stack, topic):
    config = client_config(stack.info["kafka"]["bootstrap_servers"])
    assert _roundtrip(config, topic, b"plain") == [b"plain"]


def test_eventhubs_listener_accepts_the_connection_string(stack, stack_env, topic):
    config = client_config(stack_env["STREAMDASH_EVENTHUBS_BOOTSTRAP"], stack_env["EVENTHUBS_CONNECTION_STRING"],
                           stack_env["STREAMDASH_KAFKA_CA_FILE"])
    assert config["sasl.username"] == "$ConnectionString"
    assert _roundtrip(config, topic, b"over tls") == [b"over tls"]


def test_an_eventhub_like_topic_stamps_records_with_the_append_time_not_the_producer_s(stack, stack_env, eventhub,
                                                                                       topic):
    """Event Hubs stamps each event with its enqueue time; the stack's default and `eventhub` topics do the same."""
    from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME

    config = client_config(stack_env["STREAMDASH_EVENTHUBS_BOOTSTRAP"], stack_env["EVENTHUBS_CONNECTION_STRING"],
                           stack_env["STREAMDASH_KAFKA_CA_FILE"])
    an_hour_ahead_ms = int(time.time() * 1000) + 59 * 60_000
    for name, expected_type in ((eventhub, TIMESTAMP_LOG_APPEND_TIME), (stack.info["kafka"]["default_topic"],
                                                                        TIMESTAMP_LOG_APPEND_TIME),
                                (topic, TIMESTAMP_CREATE_TIME)):
        stamps: list = []
        sent_ms = int(time.time() * 1000)
        assert _roundtrip(config, name, b"x", an_hour_ahead_ms, stamps) == [b"x"]
        (timestamp_type, timestamp_ms), = stamps
        assert timestamp_type == expected_type, name
        if expected_type == TIMESTAMP_LOG_APPEND_TIME:
            assert sent_ms - 1000 <= timestamp_ms <= int(time.time() * 1000) + 1000
        else:
            assert timestamp_ms == an_hour_ahead_ms


def test_stack_topic_creates_a_topic_like_the_stack_s_own(stack):
    """A new fleet's topic on the local stack (the broker creates none on first use): `streamdash stack topic`."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    name = f"fleet-{uuid.uuid4().hex[:8]}"
    run = subprocess.run([*CLI, "stack", "--dir", str(stack.dir), "topic", name, "--partitions", "2"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    admin = AdminClient({"bootstrap.servers": stack.info["kafka"]["bootstrap_servers"]})
    assert len(admin.list_topics(name, timeout=15).topics[name].partitions) == 2
    [configs] = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, name)]).values()
    assert configs.result(timeout=15)["message.timestamp.type"].value == "LogAppendTime"
    config = client_config(stack.info["kafka"]["bootstrap_servers"])
    assert _roundtrip(config, name, b"mine") == [b"mine"]


def test_eventhubs_listener_refuses_a_wrong_key(stack_env, topic):
    wrong = stack_env["EVENTHUBS_CONNECTION_STRING"].replace("SharedAccessKey=", "SharedAccessKey=wrong")
    errors: list[KafkaError] = []
    config = client_config(stack_env["STREAMDASH_EVENTHUBS_BOOTSTRAP"], wrong, stack_env["STREAMDASH_KAFKA_CA_FILE"])
    producer = Producer({**config, "message.timeout.ms": 4000, "error_cb": errors.append})
    delivered: list = []
    producer.produce(topic, b"x", on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(10)
    assert delivered and delivered[0] is not None, "a wrong key must not deliver"
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors)


def test_eventhubs_listener_refuses_an_untrusted_certificate(stack_env, topic):
    config = client_config(stack_env["STREAMDASH_EVENTHUBS_BOOTSTRAP"], stack_env["EVENTHUBS_CONNECTION_STRING"])
    errors: list[KafkaError] = []
    producer = Producer({**config, "message.timeout.ms": 4000, "error_cb": errors.append, "log_level": 0})
    delivered: list = []
    producer.produce(topic, b"x", on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(10)
    assert delivered and delivered[0] is not None, "an untrusted certificate must not deliver"
    assert any("certificate verify failed" in e.str() for e in errors), [str(e) for e in errors]


def test_influxdb_takes_v2_writes_and_answers_influxql(stack, influx):
    from influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS

    with InfluxDBClient(url=influx.url, token=influx.token, org="streamdash") as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket=influx.bucket, record="stack_check,site=a value=1.5,n=3i 1700000000000000000")
    assert influx.query("SELECT value, n FROM stack_check") == [
        {"time": 1700000000000000000, "value": 1.5, "n": 3}]


def test_influxdb_refuses_a_wrong_token(influx):
    from influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS
    from influxdb_client.rest import ApiException

    with InfluxDBClient(url=influx.url, token="streamdash:wrong", org="streamdash") as client, \
            pytest.raises(ApiException) as refused:
        client.write_api(write_options=SYNCHRONOUS).write(bucket=influx.bucket, record="x v=1")
    assert refused.value.status == 401


def test_up_twice_is_harmless(stack):
    pids = {name: process.read_pid(stack.dir / "run" / f"{name}.pid") for name in ("kafka", "influxdb")}
    info = stack.up()
    assert info == stack.info
    assert {name: process.read_pid(stack.dir / "run" / f"{name}.pid") for name in pids} == pids


@pytest.mark.stack  # starts a stack of its own
def test_down_leaves_no_process(tmp_path):
    own = Stack(tmp_path / "own", ports=FREE_PORTS, die_with_parent=True, progress=lambda _: None)
    own.up()
    pids = [int((own.dir / "run" / f"{name}.pid").read_text()) for name in ("kafka", "influxdb")]
    assert sorted(own.down()) == ["influxdb", "kafka"]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    assert own.running() == {"kafka": False, "influxdb": False}
    assert own.down() == []
    own.up()  # again, over the data and certificates of the first run
    assert own.running() == {"kafka": True, "influxdb": True}
    assert sorted(own.down()) == ["influxdb", "kafka"]


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=600)


def _assert_clear_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("streamdash: error: ")
    for phrase in phrases:
        assert phrase in result.stderr


def test_a_taken_port_is_a_clear_error(tmp_path, stack):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stack_dir = tmp_path / "busy"
        result = _cli(["stack", "--dir", str(stack_dir), "--ports", f"kafka={port}", "up"], {})
    _assert_clear_error(result, f"port {port}", "already in use")


def test_missing_java_is_a_clear_error(tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    result = _cli(["stack", "--dir", str(tmp_path / "s"), "up"],
                  {"PATH": str(empty_bin), **ALL_FREE})
    _assert_clear_error(result, "`java` was not found", "Java 17+")


def test_missing_go_and_failed_download_are_clear_errors(tmp_path):
    """A fresh cache: Kafka installs from the Maven cache, then InfluxDB's build needs Go and the module proxy."""
    home = tmp_path / "home"
    ports = ALL_FREE
    no_go = ":".join(p for p in os.environ["PATH"].split(":") if not (Path(p) / "go").exists())
    result = _cli(["stack", "--dir", str(tmp_path / "a"), "up"], {"STREAMDASH_HOME": str(home), "PATH": no_go, **ports})
    _assert_clear_error(result, "`go` was not found")
    offline = {"STREAMDASH_HOME": str(home), "GOPROXY": "off", "GOMODCACHE": str(tmp_path / "gomod"),
               "GOFLAGS": "-modcacherw", **ports}
    result = _cli(["stack", "--dir", str(tmp_path / "b"), "up"], offline)
    _assert_clear_error(result, "installing the InfluxDB", "failed", "GOPROXY=off")
    assert Stack(tmp_path / "a").running() == Stack(tmp_path / "b").running() == {"kafka": False, "influxdb": False}


def test_cluster_ids_never_look_like_an_option():
    from streamdash_toolbox.stack.kafka import new_cluster_id

    ids = [new_cluster_id() for _ in range(5000)]  # about 1 in 64 raw ids starts with '-'
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
