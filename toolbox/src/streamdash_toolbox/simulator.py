"""The device simulator: N devices across M sites sending telemetry to Kafka or Event Hubs.

Signals are plausible (a daily temperature cycle per site, noise, slow drift, occasional spikes, a battery
that drains). At configurable rates it injects events late within the watermark, late beyond it,
out-of-order pairs, exact duplicates and malformed payloads of every dead-letter reason. For a given seed and
start time the records are identical. Every record sent is written to a manifest (JSON lines) with the
partition and offset Kafka gave it and what it is, so tests compute ground truth from what really left.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from streamdash.errors import StreamdashError
from streamdash.events import SCHEMA_VERSION, Reason

DEVICE_TYPES = ("thermostat", "weather-station", "cold-store")


class Category:
    ON_TIME = "on_time"
    OUT_OF_ORDER = "out_of_order"  # sent after a newer event of the same device, within a second
    LATE_WITHIN = "late_within"  # older than the newest event by a third of the watermark: still counted
    LATE_BEYOND = "late_beyond"  # older than the watermark plus the largest window plus 2 minutes: dropped
    DUPLICATE = "duplicate"  # byte-for-byte re-send of an earlier event: counted once
    MALFORMED = "malformed"  # dead-lettered; `reason` says why

    COUNTED = (ON_TIME, OUT_OF_ORDER, LATE_WITHIN)


@dataclass
class SimulatorSettings:
    devices: int = 20
    sites: int = 4
    rate: float = 100.0  # events per second, all devices together
    duration_s: float = 60.0
    seed: int = 1
    start_time_ms: int | None = None  # event time of the first event; None = now
    realtime: bool = True  # pace sends to the event clock; False sends as fast as possible
    late_within_rate: float = 0.01
    late_beyond_rate: float = 0.005
    out_of_order_rate: float = 0.01
    duplicate_rate: float = 0.01
    malformed_rate: float = 0.01
    watermark_s: float = 30.0
    max_window_s: float = 60.0
    max_event_bytes: int = 65536
    late_beyond_after_s: float | None = None  # no late_beyond before this much event time; None = watermark+15s
    epoch_millis_share: float = 0.5  # share of events whose eventTime is epoch ms rather than ISO-8601
    malformed_reasons: tuple[str, ...] = Reason.ALWAYS_CHECKED  # what the malformed records get wrong
    first_seq: int = 0  # each device's first event gets first_seq + 1 (a later run continues a fleet's sequence)

    def validate(self) -> None:
        rates = (self.late_within_rate, self.late_beyond_rate, self.out_of_order_rate, self.duplicate_rate,
                 self.malformed_rate)
        if self.devices < 1 or self.sites < 1 or self.sites > self.devices:
            raise ValueError("need at least one device and one site, and no more sites than devices")
        if self.rate <= 0 or self.duration_s <= 0:
            raise ValueError("rate and duration must be positive")
        if any(r < 0 for r in rates) or sum(rates) > 0.5:
            raise ValueError("injection rates must be >= 0 and add up to at most 0.5")
        unknown = set(self.malformed_reasons) - set(Reason.ALWAYS_CHECKED)
        if not self.malformed_reasons or unknown:
            raise ValueError(f"malformed reasons must be some of {', '.join(Reason.ALWAYS_CHECKED)}")


@dataclass
class Device:
    device_id: str
    site: str
    device_type: str
    base_temperature: float
    drift_per_hour: float
    battery: float = 1.0
    seq: int = 0


@dataclass
class Record:
    """One Kafka record the simulator sends, and what it is."""

    key: str
    payload: bytes
    category: str
    reason: str | None = None
    event: dict[str, Any] | None = field(default=None)  # the event as sent (a duplicate: the original's)


class TelemetryGenerator:
    """Deterministic stream of records for a seed and a start time."""

    def __init__(self, settings: SimulatorSettings):
        settings.validate()
        self.s = settings
        self.rng = random.Random(settings.seed)
        self.start_ms = settings.start_time_ms if settings.start_time_ms is not None else int(time.time() * 1000)
        sites = [f"site-{i:02d}" for i in range(settings.sites)]
        self.devices = [
            Device(device_id=f"dev-{i:04d}", site=sites[i % settings.sites],
                   device_type=DEVICE_TYPES[i % len(DEVICE_TYPES)],
                   base_temperature=self.rng.uniform(15.0, 25.0), drift_per_hour=self.rng.uniform(-0.5, 0.5),
                   seq=settings.first_seq)
            for i in range(settings.devices)
        ]
        self.sent_events: list[tuple[bytes, dict]] = []  # payload and truth of each valid event
        late_after = settings.late_beyond_after_s
        self.late_beyond_after_ms = int(1000 * (late_after if late_after is not None else settings.watermark_s + 15))

    @property
    def total(self) -> int:
        return int(self.s.rate * self.s.duration_s)

    def records(self) -> Iterator[tuple[int, Record]]:
        """(event-clock ms, record) pairs; the clock is when the record should be sent."""
        s, rng = self.s, self.rng
        step = 0
        while step < self.total:
            now_ms = self.start_ms + int(step * 1000 / s.rate)
            roll = rng.random()
            thresholds = [(s.malformed_rate, self._malformed), (s.duplicate_rate, self._duplicate),
                          (s.out_of_order_rate, self._out_of_order), (s.late_within_rate, self._late_within),
                          (s.late_beyond_rate, self._late_beyond)]
            chosen = self._on_time
            for rate, make in thresholds:
                if roll < rate:
                    chosen = make
                    break
                roll -= rate
            for record in chosen(now_ms):
                yield now_ms, record
                step += 1

    # ---- one kind of record each ---------------------------------------------------------------------
    def _on_time(self, now_ms: int) -> list[Record]:
        return [self._event(self.rng.choice(self.devices), now_ms, Category.ON_TIME)]

    def _late_within(self, now_ms: int) -> list[Record]:
        lateness_ms = int(self.s.watermark_s * 1000 / 3)
        return [self._event(self.rng.choice(self.devices), now_ms - lateness_ms, Category.LATE_WITHIN)]

    def _late_beyond(self, now_ms: int) -> list[Record]:
        if now_ms - self.start_ms < self.late_beyond_after_ms:
            return self._on_time(now_ms)
        lateness_ms = int((self.s.watermark_s + self.s.max_window_s + 120) * 1000)
        return [self._event(self.rng.choice(self.devices), now_ms - lateness_ms, Category.LATE_BEYOND)]

    def _out_of_order(self, now_ms: int) -> list[Record]:
        device = self.rng.choice(self.devices)
        earlier = self._event(device, now_ms - 500, Category.OUT_OF_ORDER)
        later = self._event(device, now_ms, Category.ON_TIME)
        return [later, earlier]

    def _duplicate(self, now_ms: int) -> list[Record]:
        if not self.sent_events:
            return self._on_time(now_ms)
        payload, truth = self.rng.choice(self.sent_events[-50:])
        return [Record(key=truth["device_id"], payload=payload, category=Category.DUPLICATE, event=truth)]

    def _event(self, device: Device, event_ms: int, category: str) -> Record:
        device.seq += 1
        event = {
            "schemaVersion": SCHEMA_VERSION,
            "deviceId": device.device_id,
            "site": device.site,
            "deviceType": device.device_type,
            "eventTime": self._format_time(event_ms),
            "seq": device.seq,
            "measurements": self._measurements(device, event_ms),
        }
        if self.rng.random() < 0.05:
            event["firmware"] = {"version": "1.4.2", "channel": "stable"}  # unknown fields are tolerated
        payload = json.dumps(event, separators=(",", ":")).encode()
        truth = {"device_id": device.device_id, "site": device.site, "device_type": device.device_type,
                 "event_time_ms": event_ms, "seq": device.seq, **event["measurements"]}
        self.sent_events.append((payload, truth))
        return Record(key=device.device_id, payload=payload, category=category, event=truth)

    def _format_time(self, event_ms: int) -> str | int:
        if self.rng.random() < self.s.epoch_millis_share:
            return event_ms
        offset_h = self.rng.choice((0, 1, 2, -5, 9))
        seconds, millis = divmod(event_ms, 1000)
        local = time.gmtime(seconds + offset_h * 3600)
        sign = "+" if offset_h >= 0 else "-"
        return f"{time.strftime('%Y-%m-%dT%H:%M:%S', local)}.{millis:03d}{sign}{abs(offset_h):02d}:00"

    def _measurements(self, device: Device, event_ms: int) -> dict[str, float]:
        rng = self.rng
        hours = (event_ms - self.start_ms) / 3_600_000
        day_phase = 2 * math.pi * ((event_ms / 3_600_000) % 24) / 24
        temperature = device.base_temperature + 4 * math.sin(day_phase) + device.drift_per_hour * hours
        temperature += rng.gauss(0, 0.3) + (rng.choice((-8.0, 8.0)) if rng.random() < 0.002 else 0.0)
        device.battery = max(0.0, device.battery - rng.uniform(0, 0.0005))
        return {
            "temperature": round(temperature, 3),
            "humidity": round(min(100.0, max(0.0, 55 - 10 * math.sin(day_phase) + rng.gauss(0, 1.5))), 2),
            "pressure": round(1013.25 + rng.gauss(0, 0.8), 2),
            "battery": round(device.battery, 4),
        }

    def _malformed(self, now_ms: int) -> list[Record]:
        device = self.rng.choice(self.devices)
        good = {"schemaVersion": SCHEMA_VERSION, "deviceId": device.device_id, "site": device.site,
                "deviceType": device.device_type, "eventTime": now_ms, "seq": 0,
                "measurements": self._measurements(device, now_ms)}
        reason = self.rng.choice(self.s.malformed_reasons)
        bad: Any = dict(good)
        if reason == Reason.OVERSIZE:
            bad["padding"] = "x" * (self.s.max_event_bytes + 1)
        elif reason == Reason.MALFORMED_JSON:
            text = json.dumps(good)
            return [Record(key=device.device_id, payload=text[: len(text) // 2].encode(),
                           category=Category.MALFORMED, reason=reason)]
        elif reason == Reason.UNSUPPORTED_SCHEMA_VERSION:
            bad["schemaVersion"] = 2
        elif reason == Reason.MISSING_FIELD:
            del bad[self.rng.choice(("deviceId", "site", "eventTime", "seq"))]
        elif reason == Reason.WRONG_TYPE:
            bad["measurements"] = {**good["measurements"], "temperature": "hot"}
        elif reason == Reason.BAD_EVENT_TIME:
            bad["eventTime"] = self.rng.choice(("yesterday", "2026-11-28T12:00:00", "2026-13-45T99:00:00Z"))
        elif reason == Reason.EVENT_TIME_OUT_OF_RANGE:
            bad["eventTime"] = self.rng.choice(("9999-12-31T23:59:59Z", "2200-01-01T00:00:00Z", 253402300800000, 0, -1,
                                                now_ms + 86_400_000, now_ms - 30 * 86_400_000))
        elif reason == Reason.INVALID_IDENTIFIER:
            bad["deviceId"] = self.rng.choice(("dev\n0001", "", "   ", "dev-0001\\", "a" * 300))
        elif reason == Reason.NON_FINITE_VALUE:
            text = json.dumps(good).replace(json.dumps(good["measurements"]["pressure"]), "1e999", 1)
            return [Record(key=device.device_id, payload=text.encode(), category=Category.MALFORMED, reason=reason)]
        return [Record(key=device.device_id, payload=json.dumps(bad).encode(), category=Category.MALFORMED,
                       reason=reason)]


def connected_producer(config: dict, topic: str, timeout_s: float = 10.0) -> Any:
    """A producer that has reached the broker and seen `topic`; otherwise one clear error, without the client's
    own log lines (librdkafka logs every failed connection attempt)."""
    from confluent_kafka import KafkaException, Producer

    errors: list[str] = []
    quiet = logging.getLogger("streamdash_toolbox.simulator.librdkafka")
    quiet.setLevel(logging.CRITICAL)
    quiet.propagate = False
    producer = Producer({**config, "error_cb": lambda err: errors.append(err.str())}, logger=quiet)
    try:
        metadata = producer.list_topics(topic, timeout=timeout_s)
    except KafkaException as err:
        errors.append(err.args[0].str() if err.args else str(err))
        metadata = None
    where = config["bootstrap.servers"]
    if metadata is None or not metadata.brokers:
        raise StreamdashError(f"Kafka at {where} is unreachable: no answer within {timeout_s:.0f} s "
                              f"({errors[-1] if errors else 'no broker'}); is the broker running, the address right?")
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        raise StreamdashError(f"topic {topic!r} is not available on Kafka at {where}")
    return producer


def send(settings: SimulatorSettings, producer_config: dict, topic: str, manifest_path: Path | None,
         progress: TextIO | None = sys.stderr, progress_every_s: float = 10.0) -> dict[str, Any]:
    """Send the generated records; returns a summary (counts per category, achieved rate, failures)."""
    generator = TelemetryGenerator(settings)
    producer = connected_producer({"linger.ms": 5, "acks": "all", **producer_config},
                                  topic)
    manifest = manifest_path.open("w") if manifest_path else None
    counts: dict[str, int] = {}
    failures: list[str] = []

    def delivered(err, msg, record: Record) -> None:
        if err is not None:
            failures.append(str(err))
            return
        counts[record.category] = counts.get(record.category, 0) + 1
        if manifest:
            entry = {"partition": msg.partition(), "offset": msg.offset(), "key": record.key,
                     "category": record.category, "reason": record.reason, "event": record.event}
            manifest.write(json.dumps(entry) + "\n")

    started = time.monotonic()
    last_report = started
    sent = 0
    interrupted = False
    try:
        for clock_ms, record in generator.records():
            if settings.realtime:
                delay = (clock_ms - generator.start_ms) / 1000 - (time.monotonic() - started)
                if delay > 0:
                    time.sleep(delay)
            while True:
                try:
                    producer.produce(topic, record.payload, key=record.key.encode("utf-8", "replace"),
                                     on_delivery=lambda err, msg, r=record: delivered(err, msg, r))
                    break
                except BufferError:
                    producer.poll(0.1)
            sent += 1
            producer.poll(0)
            if progress and time.monotonic() - last_report >= progress_every_s:
                last_report = time.monotonic()
                rate = sent / (last_report - started)
                print(f"simulate: sent {sent}/{generator.total} ({rate:,.0f} events/s), "
                      f"delivered {sum(counts.values())}, failed {len(failures)}", file=progress, flush=True)
    except KeyboardInterrupt:
        interrupted = True  # stop sending, but deliver and record what was already handed to the producer
    try:
        remaining = producer.flush(60)
    finally:
        if manifest:
            manifest.close()
    elapsed = time.monotonic() - started
    summary = {"sent": sent, "delivered": sum(counts.values()), "undelivered": remaining, "failed": len(failures),
               "first_error": failures[0] if failures else None, "by_category": counts,
               "interrupted": interrupted,
               "elapsed_s": round(elapsed, 3), "events_per_s": round(sent / elapsed, 1) if elapsed else None,
               "start_time_ms": generator.start_ms, "settings": asdict(settings)}
    if progress:
        print(f"simulate: done, {summary['delivered']} delivered in {elapsed:.1f}s "
              f"({summary['events_per_s']} events/s); {counts}", file=progress, flush=True)
    return summary
