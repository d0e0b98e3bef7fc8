"""Fleets that are not the simulator's, through the real job: devices whose clocks or producers are wrong, devices
without some sensors. None of them can stop the job or make it drop another device's data; InfluxDB and the dead
letters are compared exactly with what was sent."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streamdash.events import SCHEMA_VERSION, Reason

from .pipeline import GroundTruth, Job, job_args, wait_for

ON_TIME = "on_time"
MALFORMED = "malformed"


class Fleet:
    """Sends hand-made events with a Kafka producer and writes the simulator's manifest format, so the ground
    truth is computed by the same independent code (`tests.ground_truth`)."""

    def __init__(self, bootstrap_servers: str, topic: str, manifest: Path):
        self.producer = Producer({"bootstrap.servers": bootstrap_servers, "enable.idempotence": True, "linger.ms": 5})
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

        self.producer.produce(self.topic, payload, key=truth["device_id"].encode(), on_delivery=delivered,
                              timestamp=producer_ms or 0)
        self.producer.poll(0)

    def close(self) -> None:
        assert self.producer.flush(30) == 0 and not self.failures, self.failures
        self.manifest.close()


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
    fleet = Fleet(stack.info["kafka"]["bootstrap_servers"], topic, manifest)
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
        truth.assert_matches(influx, database, tmp_path)
        fast = 'SELECT "count", temperature_mean FROM telemetry_site WHERE site = \'fast\' AND "window" = \'5s\''
        if adjusted:
            assert wait_for(lambda: sum(row["count"] for row in influx.query(fast, database)) == 2, 60)
            assert all(started_ms * 1_000_000 <= row["time"] <= now_ms() * 1_000_000
                       for row in influx.query(fast, database))
        assert job.terminate() == 0
    finally:
        fleet.producer.flush(10)
        job.cleanup()
    assert "Traceback" not in job.output()
    progress = influx.query("SELECT * FROM pipeline_progress", database)
    assert sum(row["input_rows"] for row in progress) == len(truth.entries)
    assert influx.query(fast, database) == [] or adjusted
    assert sum(row.get("early_events_adjusted") or 0 for row in progress) == (2 if adjusted else 0)
    assert sum(row["rows_dropped_by_watermark"] for row in progress) == 0
    assert sum(row["duplicates_dropped"] for row in progress) == 1
    freshness = [row["freshness_ms"] for row in progress if row["freshness_ms"] is not None]
    assert freshness and max(freshness) <= now_ms() - started_ms
