"""The device simulator: N devices across M sites sending telemetry to Kafka or Event Hubs.

Signals are plausible (a daily temperature cycle per site, noise, slow drift, occasional spikes, a battery
that drains). At configurable rates it injects events late within the watermark, late beyond it,
out-of-order pairs, exact duplicates and malformed payloads of every dead-letter reason. For a given seed and
start time the records are identical. Every record sent is written to a manifest (JSON lines) with the
partition and offset Kafka gave it and what it is, so tests compute ground truth from what really left.

A contract field read from a header (`header:<name>`: an IoT Hub fleet's device id, enqueued time and application
properties) is sent as one, AMQP-encoded as Event Hubs delivers an AMQP sender's properties (`amqp_headers`), or
as a Kafka producer's plain bytes. A long-record contract (`contract.readings`) gets its readings as it says: an
array of them in each record, or one record per reading (a wide event's readings at one time, one record each).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from streamdash.config import HEADER_PREFIX, KEY, Contract, Validation, duration_seconds, in_body, json_path_segments
from streamdash.errors import StreamdashError
from streamdash.events import Reason

DEVICE_TYPES = ("thermostat", "weather-station", "cold-store")
SCHEMA_VERSION = 1  # the simulator's payload is the default contract's (`config.Contract`)


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
    epoch_millis_share: float = 0.5  # share of events whose time is an epoch number rather than ISO-8601
    malformed_reasons: tuple[str, ...] = Reason.ALWAYS_CHECKED  # what the malformed records get wrong
    first_seq: int = 0  # each device's first event gets first_seq + 1 (a later run continues a fleet's sequence)
    # Where each field goes in a payload, and which measurements there are: the job's `[contract]`.
    contract: Contract = field(default_factory=Contract)
    # A real fleet instead of a uniform one: device types with different sensors (one lacks the contract's second
    # measurement, one sends a sensor the contract does not name), sensors that report null for a spell, devices
    # that go silent and come back, and per-device clock skew (`ahead_tolerance_s`, `Category`).
    mixed_fleet: bool = False
    # The job's validation.max_event_time_ahead, in seconds.
    ahead_tolerance_s: float = field(default_factory=lambda: duration_seconds(Validation().max_event_time_ahead))
    # Header fields AMQP-encoded (IoT Hub and the Azure SDKs through Event Hubs), else as a Kafka producer's text.
    amqp_headers: bool = True

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
        if not set(self.malformed_reasons) & set(possible_reasons(self.contract)):
            raise ValueError(f"this contract can break none of {', '.join(self.malformed_reasons)}")
        unsent = [path for path in self.contract.paths() if not (in_body(path) or path.startswith(HEADER_PREFIX))
                  and not (path == KEY and path == self.contract.device_id)]
        if unsent:
            raise ValueError(f"the simulator sends fields in the body and headers (and the device id as the key), "
                             f"not as {unsent[0]!r}")


def possible_reasons(contract: Contract) -> tuple[str, ...]:
    """The dead-letter reasons a record can have under `contract` (no schema version, no such reason)."""
    return tuple(reason for reason in Reason.ALWAYS_CHECKED
                 if not (reason == Reason.UNSUPPORTED_SCHEMA_VERSION and not contract.schema_version)
                 and not (reason == Reason.BAD_EVENT_TIME and "iso8601" not in contract.event_time_formats))


@dataclass
class Device:
    device_id: str
    site: str
    device_type: str
    base_temperature: float
    drift_per_hour: float
    battery: float = 1.0
    seq: int = 0
    sensors: tuple[str, ...] = ()  # the contract's measurements this device has
    extra_sensor: bool = False  # sends a sensor the contract does not name (ignored by the job)
    clock_skew_ms: int = 0  # its clock minus real time
    levels: dict[str, float] = field(default_factory=dict)  # random walks of measurements without a known signal
    null_until_ms: dict[str, int] = field(default_factory=dict)  # a sensor reporting null until then
    silent_until_ms: int = 0
    used_times: set[int] = field(default_factory=set)  # without a sequence: one event per device and millisecond


@dataclass
class Record:
    """One Kafka record the simulator sends, and what it is."""

    key: str
    payload: bytes
    category: str
    reason: str | None = None
    event: dict[str, Any] | None = field(default=None)  # the event as sent (a duplicate: the original's)
    headers: tuple[tuple[str, bytes], ...] = ()


def place(document: dict, path: str, value: Any) -> None:
    """Set `value` at a contract path: a JSON path, creating the objects on the way, or `header:<name>` (the
    document's `HEADERS` entry). The key is the device id already."""
    if path == KEY:
        return
    if path.startswith(HEADER_PREFIX):
        document.setdefault(HEADERS, {})[path.removeprefix(HEADER_PREFIX)] = value
        return
    *parents, last = json_path_segments(path)
    for key in parents:
        document = document.setdefault(key, {})
    document[last] = value


def remove(document: dict, path: str) -> None:
    """Leave the field at a contract path out."""
    if path.startswith(HEADER_PREFIX):
        document.get(HEADERS, {}).pop(path.removeprefix(HEADER_PREFIX), None)
        return
    *parents, last = json_path_segments(path)
    for key in parents:
        document = document[key]
    del document[last]


HEADERS = "\x00headers"  # a document's headers, beside its JSON body (no payload key: control characters)


def message(document: dict, contract: Contract, amqp: bool) -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
    """A document as the record's body and headers: AMQP-encoded (the event time, in milliseconds, as an AMQP
    timestamp, as IoT Hub's enqueued time is) or a Kafka producer's text (null values left out)."""
    from streamdash_toolbox.amqp import encoded

    body = {key: value for key, value in document.items() if key != HEADERS}
    headers = []
    for name, value in document.get(HEADERS, {}).items():
        if amqp:
            is_time = isinstance(value, int) and f"{HEADER_PREFIX}{name}" == contract.event_time
            amqp_type = "timestamp" if is_time else "long" if type(value) is int else None
            headers.append((name, encoded(value, amqp_type)))
        elif value is not None:
            headers.append((name, (value if isinstance(value, str) else json.dumps(value)).encode()))
    return json.dumps(body, separators=(",", ":")).encode(), tuple(headers)


class TelemetryGenerator:
    """Deterministic stream of records for a seed and a start time."""

    def __init__(self, settings: SimulatorSettings):
        settings.validate()
        self.s = settings
        self.contract = settings.contract
        self.rng = random.Random(settings.seed)
        self.start_ms = settings.start_time_ms if settings.start_time_ms is not None else int(time.time() * 1000)
        sites = [f"site-{i:02d}" for i in range(settings.sites)]
        self.devices = [self._device(i, sites[i % settings.sites]) for i in range(settings.devices)]
        self.sent_events: list[tuple[Record, dict]] = []  # record and truth of each valid event
        late_after = settings.late_beyond_after_s
        self.late_beyond_after_ms = int(1000 * (late_after if late_after is not None else settings.watermark_s + 15))
        self.reasons = tuple(r for r in settings.malformed_reasons if r in possible_reasons(self.contract))
        self._silent_until_ms = 0  # no device is silent from then on
        # A device whose clock is far behind stays silent until its events are late for a watermark already set.
        self._far_behind = any(self._clock_far_behind(d) for d in self.devices)

    def _device(self, i: int, site: str) -> Device:
        names = tuple(self.contract.measurements)
        device = Device(device_id=f"dev-{i:04d}", site=site, device_type=DEVICE_TYPES[i % len(DEVICE_TYPES)],
                        base_temperature=self.rng.uniform(15.0, 25.0), drift_per_hour=self.rng.uniform(-0.5, 0.5),
                        seq=self.s.first_seq, sensors=names)
        if not self.s.mixed_fleet:
            return device
        if device.device_type == DEVICE_TYPES[1] and len(names) > 1:
            device.sensors = tuple(name for name in names if name != names[1])
        device.extra_sensor = device.device_type == DEVICE_TYPES[2]
        skew = self.rng.random()
        tolerance_ms = int(self.s.ahead_tolerance_s * 1000)
        if skew < 0.05 and i:  # an hour or minutes fast: its events are dead letters
            device.clock_skew_ms = self.rng.randint(tolerance_ms + 10_000, 3_600_000)
        elif skew < 0.10 and i:  # an hour or minutes slow: late for the watermark, once the watermark is set
            late_ms = int((self.s.watermark_s + self.s.max_window_s + 120) * 1000)
            device.clock_skew_ms = -self.rng.randint(late_ms, max(late_ms, 3_600_000))
        elif skew < 0.50:  # off by a little: within the tolerance ahead, a second behind
            device.clock_skew_ms = self.rng.randint(-1000, max(0, tolerance_ms - 1000))
        return device

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
    def _sender(self, now_ms: int) -> Device:
        """A device that is not silent now (a mixed fleet's devices fall silent and come back). The fleet is only
        searched while one may be silent: a search per record would cap a fleet of 20,000 at ~500 events/s."""
        awake = self.devices
        far_behind_silent = self._far_behind and now_ms - self.start_ms < self.late_beyond_after_ms
        if now_ms < self._silent_until_ms or far_behind_silent:
            awake = [d for d in self.devices if d.silent_until_ms <= now_ms
                     and not (far_behind_silent and self._clock_far_behind(d))
                     ] or self.devices
        device = self.rng.choice(awake)
        if self.s.mixed_fleet and self.rng.random() < 0.002:
            device.silent_until_ms = now_ms + self.rng.randint(5_000, 60_000)
            self._silent_until_ms = max(self._silent_until_ms, device.silent_until_ms)
        return device

    def _clock_far_behind(self, device: Device) -> bool:
        """Its events are late for the watermark (`LATE_BEYOND`) as soon as one is set."""
        return device.clock_skew_ms < -self.s.ahead_tolerance_s * 1000

    def _on_time(self, now_ms: int) -> list[Record]:
        return self._event(self._sender(now_ms), now_ms, Category.ON_TIME)

    def _late_within(self, now_ms: int) -> list[Record]:
        lateness_ms = int(self.s.watermark_s * 1000 / 3)
        return self._event(self._sender(now_ms), now_ms - lateness_ms, Category.LATE_WITHIN)

    def _late_beyond(self, now_ms: int) -> list[Record]:
        if now_ms - self.start_ms < self.late_beyond_after_ms:
            return self._on_time(now_ms)
        lateness_ms = int((self.s.watermark_s + self.s.max_window_s + 120) * 1000)
        return self._event(self._sender(now_ms), now_ms - lateness_ms, Category.LATE_BEYOND)

    def _out_of_order(self, now_ms: int) -> list[Record]:
        device = self._sender(now_ms)
        earlier = self._event(device, now_ms - 500, Category.OUT_OF_ORDER)
        later = self._event(device, now_ms, Category.ON_TIME)
        return [*later, *earlier]

    def _duplicate(self, now_ms: int) -> list[Record]:
        if not self.sent_events:
            return self._on_time(now_ms)
        original, truth = self.rng.choice(self.sent_events[-50:])
        return [Record(key=truth["device_id"], payload=original.payload, category=Category.DUPLICATE, event=truth,
                       headers=original.headers)]

    def _event(self, device: Device, true_ms: int, category: str) -> list[Record]:
        """An event measured at `true_ms`, stamped by the device's own clock: one record, or with one reading per
        record one for each of its readings (each with its own truth, which names the reading)."""
        event_ms = true_ms + device.clock_skew_ms
        if self.contract.sequence is None:  # the device and the time are the event's identity
            while event_ms in device.used_times:
                event_ms += 1
            device.used_times.add(event_ms)
        if device.clock_skew_ms > self.s.ahead_tolerance_s * 1000:
            category, reason = Category.MALFORMED, Reason.EVENT_TIME_OUT_OF_RANGE
        elif self._clock_far_behind(device):
            category, reason = Category.LATE_BEYOND, None
        else:
            reason = None
        device.seq += 1
        records = []
        for values in self._readings(self._measurements(device, true_ms)):
            payload, headers = self._message(self._document(device, event_ms, values))
            truth = {"device_id": device.device_id, "site": device.site, "device_type": device.device_type,
                     "event_time_ms": event_ms, "seq": device.seq if self.contract.sequence else None, **values,
                     **({"reading": next(iter(values))} if self.contract.one_reading_per_record() else {})}
            record = Record(key=device.device_id, payload=payload, category=category, reason=reason,
                            event=None if reason else truth, headers=headers)
            if reason is None:
                self.sent_events.append((record, truth))
            records.append(record)
        return records

    def _readings(self, values: dict[str, float | None]) -> list[dict[str, float | None]]:
        """An event's values as its records carry them: all in one, or with one reading per record one each (a
        sensor without a value sends no reading)."""
        if not self.contract.one_reading_per_record():
            return [values]
        return [{name: value} for name, value in values.items() if value is not None]

    def _message(self, document: dict) -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
        return message(document, self.contract, self.s.amqp_headers)

    def _document(self, device: Device, event_ms: int, values: dict[str, float | None]) -> dict:
        c = self.contract
        document: dict = {}
        if c.schema_version:
            place(document, c.schema_version.path, c.schema_version.accepted[0])
        place(document, c.device_id, device.device_id)
        place(document, c.site, device.site)
        if c.device_type:
            place(document, c.device_type, device.device_type)
        place(document, c.event_time, self._format_time(event_ms))
        if c.sequence:
            place(document, c.sequence, device.seq)
        if c.readings is None:
            for name, value in values.items():
                place(document, c.measurements[name].path, value)
        else:
            readings = [self._reading(name, value) for name, value in values.items()]
            if c.readings.array:
                place(document, c.readings.array, readings)
            else:
                document |= readings[0]
        if device.extra_sensor:
            document["uptime_s"] = (event_ms - self.start_ms) // 1000  # a sensor the contract does not name
        if self.rng.random() < 0.05:
            document["firmware"] = {"version": "1.4.2", "channel": "stable"}  # unknown fields are tolerated
        return document

    def _reading(self, name: str, value: float | None) -> dict:
        """A long record's reading of measurement `name` (`contract.readings`)."""
        reading: dict = {}
        place(reading, self.contract.readings.name, self.contract.reading_names()[name])
        place(reading, self.contract.readings.value, value)
        return reading

    def _format_time(self, event_ms: int) -> str | int | float:
        formats = self.contract.event_time_formats
        if "iso8601" not in formats or (len(formats) > 1 and self.rng.random() < self.s.epoch_millis_share):
            return event_ms / 1000 if "epoch_s" in formats else event_ms
        offset_h = self.rng.choice((0, 1, 2, -5, 9))
        seconds, millis = divmod(event_ms, 1000)
        local = time.gmtime(seconds + offset_h * 3600)
        sign = "+" if offset_h >= 0 else "-"
        return f"{time.strftime('%Y-%m-%dT%H:%M:%S', local)}.{millis:03d}{sign}{abs(offset_h):02d}:00"

    def _measurements(self, device: Device, event_ms: int) -> dict[str, float | None]:
        """The device's sensors' values; a mixed fleet's sensors go null for a spell (never all at once)."""
        values = {name: self._signal(device, name, event_ms) for name in device.sensors}
        if self.s.mixed_fleet:
            if self.rng.random() < 0.01:
                device.null_until_ms[self.rng.choice(device.sensors)] = event_ms + self.rng.randint(10_000, 120_000)
            nulls = [name for name in device.sensors if device.null_until_ms.get(name, 0) > event_ms]
            values |= {name: None for name in nulls[: len(device.sensors) - 1]}
        return values

    def _signal(self, device: Device, name: str, event_ms: int) -> float:
        rng = self.rng
        hours = (event_ms - self.start_ms) / 3_600_000
        day_phase = 2 * math.pi * ((event_ms / 3_600_000) % 24) / 24
        if name == "temperature":
            temperature = device.base_temperature + 4 * math.sin(day_phase) + device.drift_per_hour * hours
            temperature += rng.gauss(0, 0.3) + (rng.choice((-8.0, 8.0)) if rng.random() < 0.002 else 0.0)
            return round(temperature, 3)
        if name == "humidity":
            return round(min(100.0, max(0.0, 55 - 10 * math.sin(day_phase) + rng.gauss(0, 1.5))), 2)
        if name == "pressure":
            return round(1013.25 + rng.gauss(0, 0.8), 2)
        if name == "battery":
            device.battery = max(0.0, device.battery - rng.uniform(0, 0.0005))
            return round(device.battery, 4)
        level = device.levels.get(name, rng.uniform(0, 100)) + rng.gauss(0, 1)
        device.levels[name] = level
        return round(level, 3)

    def _malformed(self, now_ms: int) -> list[Record]:
        c = self.contract
        device = self.rng.choice(self.devices)
        values = {name: self._signal(device, name, now_ms) for name in c.measurements}
        first = next(iter(c.measurements))
        reason, key = self.rng.choice(self.reasons), device.device_id
        if reason == Reason.WRONG_TYPE:
            values[first] = "hot"
        elif reason == Reason.NON_FINITE_VALUE:  # 1e999 in JSON text, infinity in an AMQP double
            header = c.measurements[first].path and not in_body(c.measurements[first].path)
            values[first] = float("inf") if self.s.amqp_headers and header else 1.5e300
        bad = copy.deepcopy(self._document(device, now_ms, self._readings(values)[0]))
        if reason == Reason.OVERSIZE:
            bad["padding"] = "x" * (self.s.max_event_bytes + 1)
        elif reason == Reason.UNSUPPORTED_SCHEMA_VERSION:
            place(bad, c.schema_version.path, max(c.schema_version.accepted) + 1)
        elif reason == Reason.MISSING_FIELD:
            remove(bad, self.rng.choice([p for p in (c.device_id, c.site, c.event_time, c.sequence) if p and p != KEY]))
        elif reason == Reason.BAD_EVENT_TIME:
            place(bad, c.event_time, self.rng.choice(("yesterday", "2026-11-28T12:00:00", "2026-13-45T99:00:00Z")))
        elif reason == Reason.EVENT_TIME_OUT_OF_RANGE:
            epoch_s = "epoch_s" in c.event_time_formats
            far: list[Any] = [ms / 1000 if epoch_s else ms for ms in (253402300800000, 0, -1, now_ms + 86_400_000,
                                                                      now_ms - 30 * 86_400_000)]
            if "iso8601" in c.event_time_formats:
                far += ["9999-12-31T23:59:59Z", "2200-01-01T00:00:00Z"]
            place(bad, c.event_time, self.rng.choice(far))
        elif reason == Reason.INVALID_IDENTIFIER:
            key = self.rng.choice(("dev\n0001", "", "   ", "dev-0001\\", "a" * 300))
            place(bad, c.device_id, key)
        payload, headers = self._message(bad)
        if reason == Reason.MALFORMED_JSON:
            payload = payload[: len(payload) // 2]
        elif reason == Reason.NON_FINITE_VALUE:
            payload = payload.replace(b"1.5e+300", b"1e999", 1)
        return [Record(key=key, payload=payload, category=Category.MALFORMED, reason=reason, headers=headers)]


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
         progress: TextIO | None = sys.stderr, progress_every_s: float = 10.0,
         stop: threading.Event | None = None) -> dict[str, Any]:
    """Send the generated records; returns a summary (counts per category, achieved rate, failures). Setting
    `stop` ends the sending between two records; what was sent is still delivered and recorded."""
    stop = stop or threading.Event()
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
    for clock_ms, record in generator.records():
        if settings.realtime:
            delay = (clock_ms - generator.start_ms) / 1000 - (time.monotonic() - started)
            if delay > 0:
                time.sleep(delay)
        if stop.is_set():
            break
        while True:
            try:
                producer.produce(topic, record.payload, key=record.key.encode("utf-8", "replace"),
                                 headers=list(record.headers),
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
    interrupted = stop.is_set()
    try:  # what was handed to the producer is delivered and recorded, stopped or not
        remaining = producer.flush(60)
    finally:
        if manifest:
            manifest.close()
    elapsed = time.monotonic() - started
    summary = {"sent": sent, "delivered": sum(counts.values()), "undelivered": remaining, "failed": len(failures),
               "first_error": failures[0] if failures else None, "by_category": counts,
               "interrupted": interrupted,
               "elapsed_s": round(elapsed, 3), "events_per_s": round(sent / elapsed, 1) if elapsed else None,
               "start_time_ms": generator.start_ms, "settings": {
                   name: value.model_dump(mode="json") if hasattr(value, "model_dump") else value
                   for name, value in asdict(settings).items()}}
    if progress:
        print(f"simulate: done, {summary['delivered']} delivered in {elapsed:.1f}s "
              f"({summary['events_per_s']} events/s); {counts}", file=progress, flush=True)
    return summary
