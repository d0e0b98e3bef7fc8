"""Fleets that are not the simulator's, through the real job: devices whose clocks or producers are wrong, devices
without some sensors. None of them can stop the job or make it drop another device's data; InfluxDB and the dead
letters are compared exactly with what was sent."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streamdash.config import Contract
from streamdash.events import Reason
from streamdash.sinks.grafana_live import GrafanaLivePusher
from streamdash_toolbox import dashboards
from streamdash_toolbox.kafka_client import client_config
from streamdash_toolbox.simulator import SCHEMA_VERSION
from streamdash_toolbox.testing import REPO
from streamdash_toolbox.testing.pipeline import GroundTruth, Job, java_trust_store, job_args, wait_for, wait_until_read

ON_TIME = "on_time"
MALFORMED = "malformed"


class Fleet:
    """Sends hand-made events with a Kafka producer and writes the simulator's manifest format, so the ground
    truth is computed by the same independent code (`tests.ground_truth`)."""

    def __init__(self, producer_config: dict, topic: str, manifest: Path):
        self.producer = Producer({**producer_config, "linger.ms": 5})
        self.topic = topic
        self.manifest = manifest.open("w")
        self.seq: dict[str, int] = {}
        self.failures: list[str] = []
        self.payloads: list[bytes] = []

    def send(self, device: str, site: str, event_ms: int, measurements: dict, category: str = ON_TIME,
             reason: str | None = None, producer_ms: int | None = None, seq: int | None = None) -> dict:
        """One event; `producer_ms` is the Kafka timestamp the producer claims (default: its own clock)."""
        seq = seq if seq is not None else self.seq.get(device, 0) + 1
        self.seq[device] = seq
        payload = {"schemaVersion": SCHEMA_VERSION, "deviceId": device, "site": site, "deviceType": "probe",
                   "eventTime": event_ms, "seq": seq, "measurements": measurements}
        truth = {"device_id": device, "site": site, "device_type": "probe", "event_time_ms": event_ms, "seq": seq,
                 **measurements}
        self.payloads.append(json.dumps(payload).encode())
        self.resend(self.payloads[-1], truth, category, reason, producer_ms)
        return truth

    def resend(self, payload: bytes, truth: dict, category: str, reason: str | None = None,
               producer_ms: int | None = None) -> None:
        def delivered(err, msg) -> None:
            if err is not None:
                self.failures.append(str(err))
                return
            self.manifest.write(json.dumps({"partition": msg.partition(), "offset": msg.offset(), "key": "",
                                            "category": category, "reason": reason, "event": truth}) + "\n")

        key = (truth or {}).get("device_id", "").encode()
        self.producer.produce(self.topic, payload, key=key, on_delivery=delivered, timestamp=producer_ms or 0)
        self.producer.poll(0)

    def close(self) -> None:
        assert self.producer.flush(30) == 0 and not self.failures, self.failures
        self.manifest.close()


def matches_then_stops(job: Job, truth: GroundTruth, influx, database: str, work: Path) -> list[dict]:
    """Wait until InfluxDB and the dead letters match the ground truth, stop the job with SIGTERM, and check what
    every run must show: a clean stop and exactly the manifest's records read. Returns pipeline_progress."""
    truth.assert_matches(influx, database, work)
    wait_until_read(influx, database, len(truth.entries))
    assert job.terminate() == 0
    assert "Traceback" not in job.output()
    progress = influx.query("SELECT * FROM pipeline_progress", database)
    assert sum(row["input_rows"] for row in progress) == len(truth.entries)
    return progress


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.mark.parametrize("early_events", ["dead_letter", "adjust"])
def test_no_device_s_clock_or_missing_sensor_can_drop_or_stall_another_device_s_data(stack, stack_env, influx, topic,
                                                                                    database, tmp_path, early_events):
    """On a CreateTime topic (producers stamp their own records, as Kafka does by default), amid on-time events
    of three full devices and one with only a temperature sensor (another sends nulls for the rest): a device
    14 minutes fast whose producer stamps the same, one 59 minutes fast (Kafka accepts up to an hour ahead), and
    one stamped at the epoch by a producer at the epoch. The early events are dead letters (or, adjusted, counted
    and taken at the batch's time, in their site's windows), the epoch is a dead letter, every other event lands in
    its windows, nothing is dropped as late, and no batch's freshness is older than the run. Then, after a quiet
    spell, devices that restart their sequence numbers lose nothing, and a re-delivery counts once."""
    started_ms = now_ms()
    job = Job(job_args(stack, topic, database, tmp_path, f"validation.early_events={early_events}"), stack_env,
              tmp_path / "job.log")
    adjusted = early_events == "adjust"
    manifest = tmp_path / "manifest.jsonl"
    fleet = Fleet(client_config(stack.info["kafka"]["bootstrap_servers"]), topic, manifest)
    full = {"temperature": 20.0, "humidity": 40.0, "pressure": 1000.0, "battery": 0.5}
    try:
        job.wait_started()
        for i in range(60):  # 15 s of on-time data, four events every 250 ms
            t = now_ms()
            for n, site in ((1, "a"), (2, "a"), (3, "b")):
                fleet.send(f"full-{n}", site, t, {m: v + i + n for m, v in full.items()})
            fleet.send("temperature-only", "b", t, {"temperature": 10.0 + i})
            fleet.send("nulls", "b", t, {"temperature": 5.0 - i, "humidity": None, "battery": None})
            for at, minutes in ((10, 14), (20, 59)):
                if i == at:
                    ahead = now_ms() + minutes * 60_000
                    fleet.send(f"fast-{minutes}m", "fast", ahead, full,
                               *((ON_TIME, None) if adjusted else (MALFORMED, Reason.EVENT_TIME_OUT_OF_RANGE)),
                               producer_ms=ahead)
            if i == 30:
                fleet.send("epoch", "a", 1, full, MALFORMED, Reason.EVENT_TIME_OUT_OF_RANGE, producer_ms=1)
            time.sleep(0.25)
        # A quiet spell longer than the watermark (10 s): the watermark stands still, phase one's keys stay in the
        # deduplication's state. Then the full devices reboot (their sequences start over) and one record is
        # delivered twice: the reboot's events all count, the re-delivery once.
        time.sleep(15)
        for i in range(12):
            t = now_ms()
            for n, site in ((1, "a"), (2, "a"), (3, "b")):
                rebooted = fleet.send(f"full-{n}", site, t, {"temperature": 30.0 + i}, seq=i + 1)
            time.sleep(0.25)
        fleet.resend(fleet.payloads[-1], rebooted, "duplicate")
        fleet.close()
        truth = GroundTruth(manifest, sites=lambda site: site != "fast")  # adjusted: at a time only the job knows
        assert len(truth.dead) == (1 if adjusted else 3)
        progress = matches_then_stops(job, truth, influx, database, tmp_path)
        fast = 'SELECT "count", temperature_mean FROM telemetry_site WHERE site = \'fast\' AND "window" = \'5s\''
        if adjusted:
            assert wait_for(lambda: sum(row["count"] for row in influx.query(fast, database)) == 2, 60)
            assert all(started_ms * 1_000_000 <= row["time"] <= now_ms() * 1_000_000
                       for row in influx.query(fast, database))
    finally:
        fleet.producer.flush(10)
        job.cleanup()
    assert influx.query(fast, database) == [] or adjusted
    assert sum(row.get("early_events_adjusted") or 0 for row in progress) == (2 if adjusted else 0)
    assert sum(row["rows_dropped_by_watermark"] for row in progress) == 0
    assert sum(row["duplicates_dropped"] for row in progress) == 1
    freshness = [row["freshness_ms"] for row in influx.query("SELECT freshness_ms FROM pipeline_writes", database)]
    assert freshness and max(freshness) <= now_ms() - started_ms


# A fleet that is not the simulator's: flat payloads with their own names, epoch seconds, no sequence numbers,
# five measurements (one nested), a tag, and a device type that lacks a sensor.
FLAT_CONTRACT = {
    "device_id": "$.id", "site": "$.loc", "device_type": "$.kind", "default_device_type": "meter",
    "event_time": "$.ts", "event_time_formats": ["epoch_s"], "sequence": "", "schema_version": False,
    "measurements": {"co2": {"path": "$.co2"}, "rpm": {"path": "$.rpm"}, "temp_c": {"path": "$.temp_c"},
                     "hum": {"path": "$.hum"}, "vibration": {"path": "$.vib.rms"}},
    "tags": {"firmware": "$.fw"}}


def test_a_fleet_with_its_own_contract_through_the_event_hubs_listener_matches_ground_truth(stack, stack_env,
                                                                                           influx, eventhub,
                                                                                           database, tmp_path):
    """Configured in one place, no code: the job reads the contract from --set overrides (TOML values), through
    SASL_SSL/PLAIN on a topic stamped with the append time like an event hub. Devices' clocks are skewed from 4 s
    behind to 4 s ahead (within the ahead tolerance); one is 90 s fast (a dead letter), one event has no id (a dead
    letter), and one record is delivered twice (counted once: the same device and event time)."""
    contract = Contract.model_validate(FLAT_CONTRACT)
    overrides = [f"contract.{key}={toml_value(value)}" for key, value in FLAT_CONTRACT.items()]
    windows = {"10s": 10, "1m": 60}  # the dashboards' sizes: their panels are checked on this run too
    job = eventhubs_job(stack, stack_env, eventhub, database, tmp_path, *overrides,
                        'aggregation.window_sizes=["10 seconds", "1 minute"]')
    manifest = tmp_path / "manifest.jsonl"
    fleet = Fleet(client_config(stack_env["STREAMDASH_EVENTHUBS_BOOTSTRAP"], stack_env["EVENTHUBS_CONNECTION_STRING"],
                                stack_env["STREAMDASH_KAFKA_CA_FILE"]), eventhub, manifest)
    devices = [(f"m-{n}", f"plant-{n % 2}", skew_ms, "fan" if n % 3 == 0 else None)
               for n, skew_ms in enumerate((-4000, -2000, 0, 2000, 4000, -1000))]

    def send(device: str, site: str, event_ms: int, kind: str | None, i: int, **extra) -> dict:
        values = {"rpm": 1000.0 + i, "temp_c": 20.0 + (i % 7) / 4, "hum": None if i % 5 == 0 else 40.0 + i % 3,
                  "vibration": 0.01 * (i % 11)}
        if kind != "fan":
            values["co2"] = 400 + i % 13
        payload = {"id": device, "loc": site, "ts": event_ms / 1000, "fw": "1.2", "vib": {"rms": values["vibration"]},
                   **{k: v for k, v in values.items() if k != "vibration"}, **({"kind": kind} if kind else {}),
                   **extra}
        truth = {"device_id": device, "site": site, "device_type": kind or "meter", "event_time_ms": event_ms,
                 "seq": None, **values}
        fleet.payloads.append(json.dumps(payload).encode())
        return truth

    try:
        job.wait_started()
        for i in range(60):
            t = now_ms()
            for device, site, skew_ms, kind in devices:
                truth = send(device, site, t + skew_ms, kind, i)
                fleet.resend(fleet.payloads[-1], truth, ON_TIME)
            if i == 20:
                early = send("m-fast", "plant-0", now_ms() + 90_000, None, i)
                fleet.resend(fleet.payloads[-1], early, MALFORMED, Reason.EVENT_TIME_OUT_OF_RANGE)
                fleet.resend(json.dumps({"loc": "plant-0", "ts": t / 1000, "rpm": 1}).encode(), None, MALFORMED,
                             Reason.MISSING_FIELD)
            if i == 30:
                fleet.resend(fleet.payloads[-1], truth, "duplicate")
            time.sleep(0.25)
        fleet.close()
        truth = GroundTruth(manifest, contract=contract, windows=windows)
        assert len(truth.dead) == 2
        progress = matches_then_stops(job, truth, influx, database, tmp_path)
    finally:
        job.cleanup()
    assert sum(row["rows_dropped_by_watermark"] for row in progress) == 0
    assert sum(row["duplicates_dropped"] for row in progress) == 1
    tags = influx.query('SHOW TAG VALUES FROM telemetry_device WITH KEY = "firmware"', database)
    assert [row["value"] for row in tags] == ["1.2"]
    fields = {row["fieldKey"] for row in influx.query("SHOW FIELD KEYS FROM telemetry_device", database)}
    assert fields == {"count", *contract.stat_columns()}
    # The dashboards follow the contract: every panel of the two that show measurements returns data here.
    query = dashboards.influx_query(influx.url, influx.token, database)
    live = GrafanaLivePusher("http://grafana", "t", "streamdash", ("telemetry_site",)).channels()
    for board in ("fleet_overview", "device_drilldown"):
        checks = dashboards.check_grafana(REPO / "dashboards" / "grafana" / f"{board}.json", query,
                                          dashboards.Window(), live)
        failed = [(c.panel, c.problem or "no values", c.statement) for c in checks if not c.ok]
        assert checks and not failed, failed


def test_the_simulator_s_mixed_fleet_under_another_contract_matches_ground_truth(stack, stack_env, influx, eventhub,
                                                                                database, tmp_path):
    """The simulator driven by a configuration file's [contract] (flat names, no sequence, epoch seconds), with a
    mixed fleet: device types without a sensor or with one the contract does not name, null spells, silent
    spells, and clocks from a second behind to an hour either way; the job reads the same contract, through the
    Event Hubs-style listener. Everything the manifest says was counted is in InfluxDB, exactly."""
    with simulated_fleet(stack, stack_env, influx, eventhub, database, tmp_path, FLAT_CONTRACT,
                         "--mixed-fleet", "--devices", "20", "--sites", "4") as (job, truth):
        contract = truth.contract
        categories = {entry["category"] for entry in truth.entries}
        assert {"late_beyond", "duplicate", "malformed"} <= categories
        assert any(e["reason"] == Reason.EVENT_TIME_OUT_OF_RANGE for e in truth.entries), "a fast clock"
        events = [e["event"] for e in truth.entries if e["category"] in ("on_time", "late_within")]
        assert any(m in e and e[m] is None for e in events for m in contract.measurements), "a null spell"
        assert any("rpm" not in e for e in events), "a device type without the sensor"
        progress = matches_then_stops(job, truth, influx, database, tmp_path)
    late = {(e["event"]["device_id"], e["event"]["event_time_ms"]) for e in truth.entries
            if e["category"] == "late_beyond"}
    late_records = sum(1 for e in truth.entries if e["event"] and (e["event"]["device_id"],
                                                                    e["event"]["event_time_ms"]) in late)
    assert sum(row["rows_dropped_by_watermark"] for row in progress) == late_records


def eventhubs_job(stack, stack_env, eventhub: str, database: str, work: Path, *overrides: str) -> Job:
    """The job reading `eventhub` through the Event Hubs-style SASL_SSL listener, trusting the stack's CA."""
    sasl = [f"source.bootstrap_servers={stack.info['kafka']['eventhubs_bootstrap_servers']}",
            "source.security=eventhubs", "source.connection_string=${EVENTHUBS_CONNECTION_STRING}",
            f"source.ca_file={stack.info['kafka']['ca_file']}"]
    return Job(job_args(stack, eventhub, database, work, *overrides, *sasl), stack_env, work / "job.log",
               java_trust_store(stack.info["kafka"]["ca_file"], work))


@contextmanager
def simulated_fleet(stack, stack_env, influx, eventhub: str, database: str, work: Path, contract: dict,
                    *simulator_args: str) -> Iterator[tuple[Job, GroundTruth]]:
    """The job reading `contract` (as --set overrides) through the Event Hubs-style listener, fed in two phases
    (`send_with_late_data`) by the simulator sending the same contract (a --conf file), and the ground truth of what
    it sent; the job is cleaned up after."""
    from streamdash_toolbox.testing.pipeline import send_with_late_data

    conf = work / "fleet.toml"
    conf.write_text("[contract]\n" + "\n".join(f"{key} = {toml_value(value)}" for key, value in contract.items()))
    overrides = [f"contract.{key}={toml_value(value)}" for key, value in contract.items()]
    job = eventhubs_job(stack, stack_env, eventhub, database, work, *overrides)
    target = ["--eventhubs", "--bootstrap", stack_env["STREAMDASH_EVENTHUBS_BOOTSTRAP"]]
    try:
        job.wait_started()
        manifest = send_with_late_data(target, eventhub, work, stack_env, influx, database,
                                       extra=("--conf", str(conf), *simulator_args))
        yield job, GroundTruth(manifest, contract=Contract.model_validate(contract))
    finally:
        job.cleanup()


def toml_value(value: object) -> str:
    """A value as TOML (inline tables for dicts), for a file or --set."""
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{key}" = {toml_value(item)}' for key, item in value.items()) + "}"
    return json.dumps(value)


# An Azure IoT Hub fleet through its Event Hubs-compatible endpoint: the device id, the enqueued time, the site,
# the sequence and one reading are message properties (Kafka headers holding AMQP encodings), the rest the body.
IOTHUB_CONTRACT = {
    "device_id": "header:iothub-connection-device-id", "site": "header:site", "device_type": "",
    "event_time": "header:iothub-enqueuedtime", "sequence": "header:seq", "schema_version": False,
    "header_encoding": "amqp",
    "measurements": {"temperature": {"path": "$.temperature"}, "humidity": {"path": "$.humidity"},
                     "pressure": {"path": "header:pressure"}}}


def test_an_iothub_fleet_s_properties_in_amqp_encoded_headers_match_ground_truth(stack, stack_env, influx, eventhub,
                                                                                 database, tmp_path):
    """The simulator sends the contract's header fields AMQP-encoded as Event Hubs delivers IoT Hub's properties
    (no device id in the body), with late, duplicate and malformed records (bad headers among them), through the
    SASL_SSL listener; InfluxDB and the dead letters match what the manifest says was sent, exactly."""
    with simulated_fleet(stack, stack_env, influx, eventhub, database, tmp_path, IOTHUB_CONTRACT,
                         "--malformed-rate", "0.03") as (job, truth):
        reasons = {entry["reason"] for entry in truth.entries if entry["category"] == "malformed"}
        assert {Reason.MISSING_FIELD, Reason.INVALID_IDENTIFIER, Reason.BAD_EVENT_TIME} <= reasons
        matches_then_stops(job, truth, influx, database, tmp_path)


# Gateways that send one reading per record: the sensor's name and value beside the device's fields, names the
# contract maps to its measurements; the deduplication tells a device's readings at one time apart by the name.
LONG_CONTRACT = {
    "device_id": "$.gateway.device", "site": "$.site", "device_type": "$.model", "event_time": "$.time",
    "event_time_formats": ["iso8601", "epoch_ms"], "sequence": "$.n", "schema_version": False,
    "readings": {"name": "$.sensor", "value": "$.reading.value"},
    "measurements": {"temperature": {"reading": "temp_c"}, "humidity": {"reading": "rh %"}, "battery": {}}}


def test_a_fleet_of_one_reading_per_record_pivots_into_wide_windows_matching_ground_truth(stack, stack_env, influx,
                                                                                        eventhub, database, tmp_path):
    """The simulator's mixed fleet as one record per reading (a device's readings at one time share its sequence
    number and time), with re-deliveries, late and malformed records, through the SASL_SSL listener: InfluxDB holds
    `temperature_mean` and the rest as for wide records, each window exactly what the manifest says was sent."""
    with simulated_fleet(stack, stack_env, influx, eventhub, database, tmp_path, LONG_CONTRACT,
                         "--mixed-fleet", "--devices", "12", "--sites", "3") as (job, truth):
        contract = truth.contract
        readings = [e["event"] for e in truth.entries if e["category"] == "on_time"]
        assert all(len(set(contract.measurements) & set(event)) == 1 for event in readings)
        by_event = Counter((e["device_id"], e["seq"], e["event_time_ms"]) for e in readings)
        assert max(by_event.values()) == len(contract.measurements), "an event's readings in records of their own"
        assert any(e["category"] == "duplicate" for e in truth.entries)
        matches_then_stops(job, truth, influx, database, tmp_path)
