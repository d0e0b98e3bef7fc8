"""The simulator: deterministic for a seed, every fault kind injected, and nothing unrecorded when stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from streamdash.events import Reason
from streamdash_toolbox.simulator import SimulatorSettings, TelemetryGenerator


def test_same_seed_and_start_give_the_same_records():
    settings = dict(rate=1000, duration_s=5, seed=11, start_time_ms=1_795_867_200_000, malformed_rate=0.05)
    first = [(t, r.key, r.payload, r.category) for t, r in TelemetryGenerator(SimulatorSettings(**settings)).records()]
    again = [(t, r.key, r.payload, r.category) for t, r in TelemetryGenerator(SimulatorSettings(**settings)).records()]
    other = [r.payload for _, r in TelemetryGenerator(SimulatorSettings(**{**settings, "seed": 12})).records()]
    assert first == again
    assert [payload for _, _, payload, _ in first] != other
    assert len(first) == 5000


def test_a_mixed_fleet_s_device_sends_nothing_while_silent():
    """A device falls silent for a spell; one whose clock is far behind is silent until its events are late for a
    watermark already set. (The fleet is searched for them only while one may be silent.)"""
    settings = SimulatorSettings(devices=200, rate=500, duration_s=120, seed=5, mixed_fleet=True,
                                 start_time_ms=1_795_867_200_000)
    generator = TelemetryGenerator(settings)
    silences: dict[str, list[tuple[int, int]]] = {}
    far_behind = {d.device_id for d in generator.devices if d.clock_skew_ms < -settings.ahead_tolerance_s * 1000}
    sent_while_silent, far_behind_early, spells = [], [], 0
    for clock_ms, record in generator.records():
        if record.category in ("duplicate", "malformed"):  # a copy of an earlier event; a payload of any device
            continue
        device = next(d for d in generator.devices if d.device_id == record.key)
        if any(start < clock_ms < end for start, end in silences.get(record.key, [])):
            sent_while_silent.append((record.key, clock_ms))
        if record.key in far_behind and clock_ms - generator.start_ms < generator.late_beyond_after_ms:
            far_behind_early.append((record.key, clock_ms))
        if device.silent_until_ms > clock_ms:  # fell silent after this record
            silences.setdefault(record.key, []).append((clock_ms, device.silent_until_ms))
            spells += 1
    assert spells > 10 and far_behind
    assert sent_while_silent == [] and far_behind_early == []


def test_every_fault_kind_is_injected_and_labelled():
    generator = TelemetryGenerator(SimulatorSettings(rate=1000, duration_s=60, seed=3, malformed_rate=0.05,
                                                     start_time_ms=1_795_867_200_000))
    records = [record for _, record in generator.records()]
    categories = {record.category for record in records}
    assert categories == {"on_time", "out_of_order", "late_within", "late_beyond", "duplicate", "malformed"}
    assert {record.reason for record in records if record.category == "malformed"} == set(Reason.ALWAYS_CHECKED)
    for record in records:
        if record.category in ("on_time", "late_within", "late_beyond", "out_of_order"):
            event = json.loads(record.payload)
            assert event["seq"] == record.event["seq"] and event["deviceId"] == record.key


@pytest.mark.parametrize("pace", [["--rate", "500"], ["--rate", "100000", "--fast"]], ids=["realtime", "flat-out"])
def test_sigterm_stops_sending_and_the_manifest_holds_every_record_sent(stack, topic, tmp_path, pace):
    """Flat out, the sender is mostly inside the producer's delivery callbacks, where a signal once lost the
    record being recorded (Kafka had one record more than the manifest)."""
    manifest = tmp_path / "manifest.jsonl"
    bootstrap = stack.info["kafka"]["bootstrap_servers"]
    sender = subprocess.Popen([sys.executable, "-m", "streamdash_toolbox.cli", "simulate", "--bootstrap", bootstrap,
                               "--topic", topic, *pace, "--duration", "60", "--manifest", str(manifest),
                               "--summary", str(tmp_path / "summary.json")],
                              env=os.environ.copy())
    time.sleep(4)
    sender.send_signal(signal.SIGTERM)
    assert sender.wait(timeout=60) == 0
    recorded = {(e["partition"], e["offset"]) for e in map(json.loads, manifest.read_text().splitlines())}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    in_topic = set()
    for partition in range(3):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        in_topic |= {(partition, offset) for offset in range(low, high)}
    consumer.close()
    assert 500 < len(recorded) < int(pace[1]) * 60, "stopped, and after sending"
    assert recorded == in_topic
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["delivered"], summary["interrupted"]) == (len(recorded), True)
    assert summary["settings"]["contract"]["device_id"] == "$.deviceId"


def test_an_unreachable_broker_is_one_line_naming_the_address():
    from streamdash_toolbox.stack.process import free_port

    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = subprocess.run([sys.executable, "-m", "streamdash_toolbox.cli", "simulate", "--bootstrap", address,
                             "--rate", "100", "--duration", "5"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and address in lines[0] and "unreachable" in lines[0], lines


def test_to_event_hubs_the_simulator_sends_uncompressed_batches_and_refuses_lz4(stack, stack_env, eventhub):
    """Event Hubs' Standard tier refuses compressed produce requests: the batches on the broker's disk say none."""
    from streamdash_toolbox.stack import install

    cli = [sys.executable, "-m", "streamdash_toolbox.cli", "simulate", "--eventhubs", "--topic", eventhub,
           "--rate", "200", "--duration", "1", "--fast"]
    assert subprocess.run(cli, env={**os.environ, **stack_env}, capture_output=True, timeout=120).returncode == 0
    segments = sorted(str(p) for p in (stack.dir / "kafka" / "data").glob(f"{eventhub}-*/*.log"))
    dump = subprocess.run([install.require_java(), "-cp", f"{install.kafka_broker_classpath()}/*",
                           "kafka.tools.DumpLogSegments", "--files", ",".join(segments)],
                          capture_output=True, text=True, timeout=120, check=True).stdout
    codecs = set(re.findall(r"compresscodec: (\w+)", dump))
    assert codecs == {"none"}, dump[:2000]
    refused = subprocess.run([*cli, "--compression", "lz4"], env={**os.environ, **stack_env}, capture_output=True,
                             text=True, timeout=60)
    lines = [line for line in (refused.stdout + refused.stderr).splitlines() if line.strip()]
    assert refused.returncode != 0 and len(lines) == 1 and "gzip" in lines[0], lines
