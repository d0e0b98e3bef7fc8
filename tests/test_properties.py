"""Property-based tests of parse + deduplicate + aggregate against an independent pure-Python oracle.

Hypothesis draws a contract (measurement names, flat or nested paths, with or without a sequence, each time format)
and a batch of records: valid events with nulls, absent sensors, all-null windows, single values, duplicates and
out-of-order times, and records broken in every way the contract names. The oracle judges each record from the
docs' rules (docs/contract.md) on its own JSON, and computes the windows in plain Python. Each property: no
exception; every record is aggregated or dead-lettered with the oracle's reason; every window equals the
oracle's (p95 by rank, within the sketch's error). Failures Hypothesis finds are saved in .hypothesis/; copy them
into tests/hypothesis-db to keep them as regression cases, replayed first on every run (it holds the empty-sketch
failure the first run of these properties found against the code before the fix).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import statistics
import struct
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase, MultiplexedDatabase, ReadOnlyDatabase

from streamdash.config import Contract, Validation
from streamdash.events import Reason
from streamdash.transforms.aggregate import deduplicate, windowed_aggregates
from streamdash.transforms.parse import dead_letters, parse_events, valid_events
from streamdash_toolbox.testing import REPO
from streamdash_toolbox.testing.ground_truth import Quantile
from streamdash_toolbox.testing.records import T0, raw

pytestmark = pytest.mark.slow  # a few minutes of Spark: in make test, not test-fast
REFERENCE_MS = int(T0.replace(tzinfo=dt.UTC).timestamp() * 1000)  # the records' append time
WINDOWS_S = (10, 60)
# Found failures: replayed from the committed tests/hypothesis-db (never changed by a run), saved in .hypothesis/.
EXAMPLES = MultiplexedDatabase(ReadOnlyDatabase(DirectoryBasedExampleDatabase(REPO / "tests" / "hypothesis-db")),
                               DirectoryBasedExampleDatabase(REPO / ".hypothesis" / "examples"))
PROPERTY = settings(max_examples=25, deadline=None, database=EXAMPLES,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$")
LONG = range(-2**63, 2**63)


# ---- the oracle: the docs' rules, on the record's own JSON -------------------------------------------------------

def _keys(path: str) -> list[str]:
    return [name or quoted for name, quoted in re.findall(r"\.([A-Za-z0-9_@-]+)|\['([^']+)'\]", path)]


def _lookup(document: dict, path: str) -> tuple[object, bool]:
    """(value or None, whether an object on the way was something else); a header's value from `HEADERS`."""
    if path.startswith("header:"):
        return document.get(HEADERS, {}).get(path.removeprefix("header:")), False
    value: object = document
    for key in _keys(path):
        if value is None:
            return None, False
        if not isinstance(value, dict):
            return None, True
        value = value.get(key)
    return value, False


def _is_long(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in LONG


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bad_identifier(text: str) -> bool:
    return (len(text) > 128 or not text.strip() or any(ord(ch) < 0x20 or ord(ch) == 0x7f for ch in text)
            or text.endswith("\\") or bool(re.search(r"\\[,= ]", text)))


def _reading(value: object, measurement) -> float | None:
    """The number a present value stands for under the contract, or None for a type it does not read as one."""
    if _is_number(value):
        return float(value)
    if isinstance(value, bool) and measurement.booleans:
        return float(value)
    if isinstance(value, str) and measurement.numeric_strings and JSON_NUMBER.fullmatch(value):
        return float(value)
    return None


def oracle(payload: str, contract: Contract, headers: dict | None = None) -> tuple[str | None, dict | None]:
    """(dead-letter reason or None, the event as the job must aggregate it); `headers`: the header fields' values as
    sent (docs/contract.md: an AMQP value is its value, a Kafka producer's text is text, or JSON where a number,
    a boolean or a time belongs)."""
    try:
        document = json.loads(payload, parse_constant=lambda name: 1 / 0)
    except (ValueError, ZeroDivisionError):
        return Reason.MALFORMED_JSON, None
    if not isinstance(document, dict):
        return Reason.MALFORMED_JSON, None
    document[HEADERS] = headers or {}
    roles = {"device_id": contract.device_id, "site": contract.site, "event_time": contract.event_time,
             "device_type": contract.device_type, "seq": contract.sequence,
             "schema_version": contract.schema_version.path if contract.schema_version else None,
             **{f"m:{m}": measurement.path for m, measurement in contract.measurements.items()},
             **_reading_roles(contract)}
    found, broken = {}, False
    for role, path in roles.items():
        if path:
            found[role], crossed = _lookup(document, path)
            broken |= crossed
    required = ["device_id", "site", "event_time", *(["seq"] if contract.sequence else []),
                *(["schema_version"] if contract.schema_version else []),
                *[role for role in ("readings", "reading:name") if role in roles]]
    measurements, unknown, readings_ok = _long_measurements(contract, found) if contract.readings else (
        {m: found[f"m:{m}"] for m in contract.measurements}, 0, True)
    no_measurement = all(v is None for v in measurements.values())
    if unknown and (contract.readings.unknown == "dead_letter" or no_measurement):
        return (Reason.UNKNOWN_MEASUREMENT if contract.readings.unknown == "dead_letter" else None), None
    if any(found[role] is None for role in required) or (no_measurement and readings_ok):
        return Reason.MISSING_FIELD, None
    readings = {m: None if v is None else _reading(v, contract.measurements[m]) for m, v in measurements.items()}
    wrong = [m for m, v in measurements.items() if v is not None and readings[m] is None]
    non_finite = [m for m, v in readings.items() if v is not None and not math.isfinite(v)]
    kept = {m: v for m, v in readings.items() if v is not None and math.isfinite(v)}
    fails = bool if contract.bad_values == "dead_letter" else (lambda bad: bool(bad) and not kept)
    event_time = found["event_time"]
    formats = contract.event_time_formats
    time_type_ok = (("iso8601" in formats and isinstance(event_time, str))
                    or ("epoch_ms" in formats and _is_long(event_time))
                    or ("epoch_s" in formats and _is_number(event_time)))
    if (broken or not isinstance(found["device_id"], str) or not isinstance(found["site"], str) or not time_type_ok
            or (found.get("device_type") is not None and not isinstance(found["device_type"], str))
            or (contract.sequence and not _is_long(found["seq"]))
            or (contract.schema_version and not _is_long(found["schema_version"]))
            or not readings_ok or fails(wrong)):
        return Reason.WRONG_TYPE, None
    if contract.schema_version and found["schema_version"] not in contract.schema_version.accepted:
        return Reason.UNSUPPORTED_SCHEMA_VERSION, None
    if isinstance(event_time, str):
        if not ISO_WITH_OFFSET.match(event_time):
            return Reason.BAD_EVENT_TIME, None
        try:
            parsed = dt.datetime.fromisoformat(event_time.replace(" ", "T"))
        except ValueError:
            return Reason.BAD_EVENT_TIME, None
        event_us = (parsed - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
    elif "epoch_s" in formats:
        event_us = round(event_time * 1_000_000)
    else:
        event_us = event_time * 1000
    offset_us = event_us - REFERENCE_MS * 1000
    if not (-9_214_560_000_000_000 <= event_us <= 9_214_646_400_000_000
            and -7 * 86_400_000_000 <= offset_us <= 5_000_000):
        return Reason.EVENT_TIME_OUT_OF_RANGE, None
    device_type = found.get("device_type") or contract.default_device_type
    if any(_bad_identifier(text) for text in (found["device_id"], found["site"], device_type)):
        return Reason.INVALID_IDENTIFIER, None
    if fails(non_finite):
        return Reason.NON_FINITE_VALUE, None
    values = {m: kept.get(m) if contract.bad_values == "drop_value" else readings[m] for m in measurements}
    return None, {"device_id": found["device_id"], "site": found["site"], "event_us": event_us,
                  "seq": found.get("seq"), "reading": found.get("reading:name"), **values}


def _reading_roles(contract: Contract) -> dict[str, str]:
    readings = contract.readings
    if readings is None:
        return {}
    return {"readings": readings.array} if readings.array else {"reading:name": readings.name,
                                                                 "reading:value": readings.value}


def _long_measurements(contract: Contract, found: dict) -> tuple[dict, int, bool]:
    """(each measurement's value, the readings no measurement names, whether the readings are of the right type) of
    a long record (docs/contract.md: an array's name given twice is its last reading)."""
    by_reading = {reading: m for m, reading in contract.reading_names().items()}
    if contract.readings.array is None:
        name = found["reading:name"]
        if name is not None and not isinstance(name, str):
            return dict.fromkeys(contract.measurements), 0, False
        known = by_reading.get(name)
        return ({m: found["reading:value"] if m == known else None for m in contract.measurements},
                int(name is not None and known is None), True)
    array = found["readings"]
    if array is not None and not isinstance(array, list):
        return dict.fromkeys(contract.measurements), 0, False
    measurements, unknown = dict.fromkeys(contract.measurements), 0
    name_key, value_key = _keys(contract.readings.name)[0], _keys(contract.readings.value)[0]
    for element in array or []:
        name = element.get(name_key) if isinstance(element, dict) else None
        if not isinstance(name, str) or name not in by_reading:
            unknown += 1
        else:
            measurements[by_reading[name]] = element.get(value_key)
    return measurements, unknown, True


def oracle_windows(events: list[dict], contract: Contract) -> dict[tuple, dict]:
    """{(level, window s, site, device or None, start us): statistics} of the deduplicated events."""
    unique = {(e["device_id"], e["seq"], e["event_us"], e["reading"]): e for e in events}.values()
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for event in unique:
        for size_s in WINDOWS_S:
            start = event["event_us"] - event["event_us"] % (size_s * 1_000_000)
            groups[("device", size_s, event["site"], event["device_id"], start)].append(event)
            groups[("site", size_s, event["site"], None, start)].append(event)
    expected = {}
    for key, group in groups.items():
        fields: dict = {"count": len(group)}
        for m in contract.measurements:
            present = [e for e in group if e[m] is not None]
            values = [e[m] for e in present]
            latest = max(present, key=lambda e: (e["event_us"], e["device_id"], e["seq"] or 0), default=None)
            computed = {"mean": statistics.fmean(values) if values else None, "min": min(values, default=None),
                        "max": max(values, default=None), "last": latest[m] if latest else None,
                        "stddev": statistics.stdev(values) if len(values) > 1 else None,
                        "p95": Quantile(tuple(sorted(values)), 0.95) if values else None}
            fields |= {f"{m}_{name}": value for name, value in computed.items() if name in contract.statistics}
        expected[key] = fields
    return expected


# ---- what Hypothesis draws -------------------------------------------------------------------------------------

NAMES = ("temperature", "co2", "rpm", "vibration_x", "m2", "Pressure", "Key2")  # any case, as Spark reads


@st.composite
def contracts(draw) -> Contract:
    """A contract; some of its fields may be headers (as IoT Hub's properties are)."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    nest = draw(st.sampled_from(["$.measurements.", "$.", "$['sensor data']."]))
    identity = draw(st.sampled_from([("$.deviceId", "$.site", "$.eventTime"), ("$.id", "$.loc.building", "$.ts"),
                                     ("header:iothub-connection-device-id", "header:site",
                                      "header:iothub-enqueuedtime")]))
    identity = tuple(path if path.startswith("$") or draw(st.booleans()) else f"$.{path[7:]}" for path in identity)
    in_headers = draw(st.sets(st.sampled_from(names)))
    shape = draw(st.sampled_from(["wide", "wide", "one_reading", "array"]))
    readings = {"one_reading": {"name": "$.sensor", "value": "$['reading value']"},
                "array": {"array": draw(st.sampled_from(["$.readings", "$.data.readings"])), "name": "$.n",
                          "value": "$.v"}}.get(shape)
    if readings:
        readings["unknown"] = draw(st.sampled_from(["dead_letter", "ignore"]))
    return Contract.model_validate({
        "device_id": identity[0], "site": identity[1], "event_time": identity[2],
        "event_time_formats": draw(st.sampled_from([["iso8601", "epoch_ms"], ["epoch_s"], ["epoch_ms"]])),
        "sequence": draw(st.sampled_from(["$.seq", "header:seq", ""])),
        **({} if draw(st.booleans()) else {"schema_version": False}),
        **({"readings": readings} if readings else {}),
        "measurements": {name: {**({"reading": draw(st.sampled_from([name, f"{name} (u)"]))} if readings else
                                   {"path": f"header:{name}" if name in in_headers else nest + name}),
                                "booleans": draw(st.booleans()),
                                "numeric_strings": draw(st.booleans())} for name in names},
        "bad_values": draw(st.sampled_from(["dead_letter", "drop_value"])),
        "header_encoding": draw(st.sampled_from(["auto", "amqp", "plain"])),
        "statistics": draw(st.sampled_from([["mean", "min", "max", "last", "stddev", "p95"], ["last", "p95"]]))})


HEADERS = "\x00headers"  # a document's header fields, beside its JSON body


def _place(document: dict, path: str, value: object) -> None:
    if path.startswith("header:"):
        document.setdefault(HEADERS, {})[path.removeprefix("header:")] = value
        return
    *parents, last = _keys(path)
    for key in parents:
        document = document.setdefault(key, {})
    document[last] = value


def _time_value(contract: Contract, event_ms: int, draw) -> object:
    formats = contract.event_time_formats
    if "epoch_s" in formats:
        return event_ms / 1000
    if "iso8601" in formats and draw(st.booleans()):
        hours = draw(st.sampled_from([0, 1, -5, 9]))
        local = dt.datetime.fromtimestamp(event_ms / 1000, dt.timezone(dt.timedelta(hours=hours)))
        return local.isoformat(timespec="milliseconds").replace("+00:00", draw(st.sampled_from(["Z", "+00:00"])))
    return event_ms


values = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
                   st.integers(-1000, 1000))
# Values a contract may read as numbers, or not: booleans, texts of JSON numbers and of other things.
other_values = st.sampled_from([True, False, "40.5", "-3", "1e3", "0", "1e999", "abc", " 1", "01", "+1", "NaN", ""])
BREAKAGES = ("drop_device", "null_site", "number_device", "string_measurement", "bool_measurement",
             "no_measurements", "bad_time", "far_time", "early_time", "blank_device", "newline_site", "not_json",
             "array", "container_not_object", "float_seq", "huge_seq", "wrong_schema_version")


TEXT_ROLES = ("device_id", "site")


def _sent(document: dict, contract: Contract, amqp: bool, smallest: bool) -> tuple[str, list, dict]:
    """(the body's JSON, the headers as sent (AMQP-encoded or a Kafka producer's text), the header fields as the job
    reads them: docs/contract.md)."""
    from streamdash_toolbox.amqp import encoded

    fields = document.pop(HEADERS, {})
    text_names = {getattr(contract, role).removeprefix("header:") for role in TEXT_ROLES}
    headers, read = [], {}
    for name, value in fields.items():
        if amqp:
            if type(value) is int and value not in LONG:  # beyond a long: a ulong, or a double beyond that
                value = value if 0 <= value < 2**64 else float(value)
            amqp_type = ("long" if value in LONG else "ulong") if type(value) is int else None
            data, amqp_value = encoded(value, amqp_type, smallest=smallest), (True, value)
        elif value is None:
            continue
        else:
            data = (value if isinstance(value, str) else json.dumps(value)).encode()
            amqp_value = _small_amqp(data)
        headers.append((name, data))
        read[name] = _as_read(data, amqp_value, name in text_names, contract.header_encoding)
    return json.dumps(document), headers, read


def _as_read(data: bytes, amqp_value: tuple[bool, object], text_field: bool, encoding: str) -> object:
    """A header's value as docs/contract.md says the job reads it; `amqp_value`: whether the bytes are exactly one
    AMQP encoding, and of what."""
    is_one, value = amqp_value
    if is_one and (encoding == "amqp" or (encoding == "auto" and not _is_text(data))):
        return value
    text = data.decode()
    return text if text_field else _json_or_text(text)


def _is_text(data: bytes) -> bool:
    try:
        return not re.search(r"[\x00-\x1f\x7f]", data.decode())
    except UnicodeDecodeError:
        return False


# AMQP's encodings below 0x80 (where text starts too): their data's layout (`struct`), or their value.
SMALL_AMQP = {0x40: None, 0x41: True, 0x42: False, 0x43: 0, 0x44: 0, 0x50: ">B", 0x51: ">b", 0x52: ">B",
              0x53: ">B", 0x54: ">b", 0x55: ">b", 0x56: ">?", 0x60: ">H", 0x61: ">h", 0x70: ">I", 0x71: ">i",
              0x72: ">f"}


def _small_amqp(data: bytes) -> tuple[bool, object]:
    """Whether a Kafka producer's bytes happen to be exactly one AMQP encoding, and its value."""
    if not data or data[0] not in SMALL_AMQP:
        return False, None
    layout = SMALL_AMQP[data[0]]
    if not isinstance(layout, str):
        return len(data) == 1, layout
    if len(data) != 1 + struct.calcsize(layout) or (data[0] == 0x56 and data[1] > 1):
        return False, None
    return True, struct.unpack(layout, data[1:])[0]


def _json_or_text(text: str) -> object:
    """A Kafka producer's text where a number, a boolean or a time belongs."""
    return json.loads(text) if JSON_NUMBER.fullmatch(text) or text in ("true", "false") else text


@st.composite
def batches(draw, contract: Contract) -> list[tuple[str, list, dict]]:
    """Records (`_sent`): events of a few devices over a few windows, some re-sent, some broken; the header fields
    AMQP-encoded (as Event Hubs delivers IoT Hub's) or as a Kafka producer's text."""
    amqp = {"amqp": True, "plain": False}.get(contract.header_encoding, draw(st.booleans()))
    smallest = draw(st.booleans())
    payloads: list = []
    used: set[tuple] = set()
    for _ in range(draw(st.integers(1, 40))):
        device = draw(st.sampled_from(["d-1", "d-2", "d 3"]))
        site = {"d-1": "north", "d-2": "north", "d 3": "south"}[device]
        event_ms = REFERENCE_MS - draw(st.integers(0, 150_000))
        seq = draw(st.integers(0, 3))
        one_reading = (draw(st.sampled_from([*contract.measurements, None])) if contract.one_reading_per_record()
                       else None)
        identity = (device, seq if contract.sequence else None, event_ms, one_reading)
        if identity in used:
            continue  # two different readings with one identity: which one counts is not defined
        used.add(identity)
        document: dict = {}
        _place(document, contract.device_id, device)
        _place(document, contract.site, site)
        _place(document, contract.event_time, _time_value(contract, event_ms, draw))
        if contract.sequence:
            _place(document, contract.sequence, seq)
        if contract.schema_version:
            _place(document, contract.schema_version.path, 1)
        measured = {}
        for name in contract.measurements:
            value = draw(values) if draw(st.integers(0, 5)) else draw(other_values)
            if value is not None or draw(st.booleans()):  # null, or absent
                measured[name] = value
        _place_measurements(document, contract, measured, one_reading, draw)
        breakage = draw(st.sampled_from([None] * 6 + list(BREAKAGES)))
        if breakage:
            _broken(document, contract, breakage, draw)
        payload, headers, read = _sent(document, contract, amqp, smallest)
        payloads.append((payload[:-1] if breakage == "not_json" else f"[{payload}]" if breakage == "array"
                         else payload, headers, read))
        if draw(st.integers(0, 9)) == 0:
            payloads.append(payloads[-1])  # a re-delivery, byte for byte
    return draw(st.permutations(payloads))


def _place_measurements(document: dict, contract: Contract, measured: dict, one_reading: str | None, draw) -> None:
    """The values at their paths, or as a long record's readings: now and then one no measurement names
    (`one_reading` None: that one, with one reading per record), and the array's in any order."""
    if not contract.readings:
        for name, value in measured.items():
            _place(document, contract.measurements[name].path, value)
        return
    names = contract.reading_names()
    readings = [(names[name], value) for name, value in measured.items()]
    if contract.readings.array is None:
        reading, value = (names[one_reading], measured.get(one_reading)) if one_reading else ("volts", 3.3)
        _place(document, contract.readings.name, reading)
        if value is not None or draw(st.booleans()):
            _place(document, contract.readings.value, value)
        return
    if draw(st.integers(0, 4)) == 0:
        readings.append(("volts", 3.3))
    _place(document, contract.readings.array, [{"n": name, "v": value}
                                               for name, value in draw(st.permutations(readings))])


def _broken(document: dict, contract: Contract, breakage: str, draw) -> None:
    """Break `document` as `breakage` says (not_json and array: its JSON text, by the caller)."""
    if breakage in ("not_json", "array"):
        return
    if contract.readings and breakage in ("string_measurement", "bool_measurement", "no_measurements",
                                          "container_not_object"):
        _broken_readings(document, contract, breakage)
        return
    first_measurement = next(iter(contract.measurements.values())).path
    changes = {"drop_device": (contract.device_id, ...), "null_site": (contract.site, None),
               "number_device": (contract.device_id, 7), "string_measurement": (first_measurement, "hot"),
               "bool_measurement": (first_measurement, True), "blank_device": (contract.device_id, " "),
               "newline_site": (contract.site, "a\nb"),
               "bad_time": (contract.event_time, draw(st.sampled_from(["yesterday", "2026-11-28T12:00:00"]))),
               "far_time": (contract.event_time, _time_value(contract, REFERENCE_MS - 8 * 86_400_000, draw)),
               "early_time": (contract.event_time, _time_value(contract, REFERENCE_MS + 6_000, draw)),
               "float_seq": (contract.sequence or contract.device_id, 1.5),
               "huge_seq": (contract.sequence or contract.device_id, 2**64),
               "wrong_schema_version": ((contract.schema_version.path if contract.schema_version
                                         else contract.device_id), 2)}
    if breakage == "no_measurements":
        for measurement in contract.measurements.values():
            _place(document, measurement.path, None)
    elif breakage == "container_not_object":
        keys = _keys(first_measurement)
        if first_measurement.startswith("header:"):
            return
        if len(keys) > 1:
            document[keys[0]] = [1, 2]
        else:
            _place(document, first_measurement, {"nested": 1})
    else:
        path, value = changes[breakage]
        if value is ... and path.startswith("header:"):
            document.get(HEADERS, {}).pop(path.removeprefix("header:"), None)
        elif value is ...:
            keys = _keys(path)
            parent = document
            for key in keys[:-1]:
                parent = parent[key]
            parent.pop(keys[-1], None)
        else:
            _place(document, path, value)


def _broken_readings(document: dict, contract: Contract, breakage: str) -> None:
    """A long record's readings broken as `breakage` says."""
    value = {"string_measurement": "hot", "bool_measurement": True, "no_measurements": None,
             "container_not_object": {"nested": 1}}[breakage]
    if contract.readings.array is None:
        _place(document, contract.readings.value, value)
        return
    if breakage == "container_not_object":
        _place(document, contract.readings.array, value)
        return
    readings, _ = _lookup(document, contract.readings.array)
    for reading in readings[:None if breakage == "no_measurements" else 1]:
        reading["v"] = value


# ---- the properties ---------------------------------------------------------------------------------------------

def check_against_the_oracle(spark, contract: Contract, records: list[tuple[str, list, dict]]) -> None:
    payloads = [payload for payload, _, _ in records]
    parsed = parse_events(raw(spark, *payloads, headers=[headers for _, headers, _ in records]), Validation(),
                          contract).cache()
    try:
        letters = {row.offset: row.reason for row in dead_letters(parsed).collect()}
        judged = [oracle(payload, contract, read) for payload, _, read in records]
        assert letters == {offset: reason for offset, (reason, _) in enumerate(judged) if reason}, records
        events = deduplicate(valid_events(parsed), "30 seconds", contract.deduplication_key())
        rows = windowed_aggregates(events, [f"{s} seconds" for s in WINDOWS_S], contract=contract).collect()
    finally:
        parsed.unpersist()
    actual = {(r.level, int(r.window.rstrip("sm")) * (60 if r.window.endswith("m") else 1), r.site, r.device_id,
               r.window_start_ns // 1000): r.asDict() for r in rows}
    expected = oracle_windows([event for _, event in judged if event], contract)
    assert set(actual) == set(expected), (sorted(set(actual) ^ set(expected)), payloads)
    for key, fields in expected.items():
        for name, value in fields.items():
            got = actual[key][name]
            if isinstance(value, Quantile):
                assert value.accepts(got), (key, name, got, value)
            elif value is None or got is None:
                assert got is None and value is None, (key, name, got, value)
            else:
                assert math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-6), (key, name, got, value)


@PROPERTY
@given(data=st.data())
def test_the_default_contract_against_the_oracle(spark, data):
    contract = Contract()
    check_against_the_oracle(spark, contract, data.draw(batches(contract)))


@PROPERTY
@given(data=st.data())
def test_random_contracts_against_the_oracle(spark, data):
    contract = data.draw(contracts())
    check_against_the_oracle(spark, contract, data.draw(batches(contract)))


# ---- the typed parse against the exact one ----------------------------------------------------------------------

# Texts a typed parse could also have read from a non-string (a number, a boolean, an object) or that look like times.
TRICKY_TEXTS = ("7", "-1", "1.5", "1e3", "true", "false", "null", "{", "[1]", "", " ", "NaN", "Infinity",
                "2026-11-28T12:00:00Z", str(REFERENCE_MS))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(TRICKY_TEXTS) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=2) | st.dictionaries(st.text(max_size=3), children, max_size=2),
    max_leaves=4)


@st.composite
def wild_payloads(draw, contract: Contract) -> list[tuple[str, list]]:
    """Records whose every field may be absent, valid, or any JSON value; with repeated keys and numbers too large
    for a double (header fields: a Kafka producer's text of the JSON)."""
    paths = [contract.device_id, contract.site, contract.event_time, *contract.tags.values(),
             *([contract.sequence] if contract.sequence else []),
             *([contract.schema_version.path] if contract.schema_version else []),
             *(m.path for m in contract.measurements.values() if m.path), *_reading_roles(contract).values()]
    reading_names = [*contract.reading_names().values(), "volts"]
    payloads = []
    for _ in range(draw(st.integers(1, 30))):
        document: dict = {}
        for path in paths:
            choice = draw(st.sampled_from(["absent", "valid", "valid", "wild"]))
            if choice == "absent":
                continue
            if choice == "wild":
                value = draw(json_values)
            elif path in (contract.device_id, contract.site, *contract.tags.values()):
                value = draw(st.sampled_from(["d-1", "north", "x y", "Ünïcode"]))
            elif path == contract.event_time:
                value = _time_value(contract, REFERENCE_MS - draw(st.integers(0, 60_000)), draw)
            elif contract.readings and path in (contract.readings.name, contract.readings.array):
                value = (draw(st.sampled_from(reading_names)) if path == contract.readings.name else
                         draw(st.lists(st.fixed_dictionaries({"n": st.sampled_from(reading_names), "v": values}),
                                       max_size=3)))
            else:
                value = draw(values)
            try:
                _place(document, path, value)
            except (AttributeError, TypeError):  # a path through a value that is not an object
                continue
        headers = [(name, json.dumps(value).encode()) for name, value in document.pop(HEADERS, {}).items()]
        text = json.dumps(document)
        twist = draw(st.sampled_from([None, None, "repeat_nested", "repeat_top", "overflow"]))
        body = [path for path in paths if path.startswith("$")]
        if twist == "repeat_nested" and "{" in text[1:] and body:
            brace = text.index("{", 1) + 1
            text = text[:brace] + f'"{_keys(body[-1])[-1]}": {json.dumps(draw(json_values))}, ' + text[brace:]
        elif twist == "repeat_top" and body:
            text = "{" + f'"{_keys(body[0])[0]}": {json.dumps(draw(json_values))}, ' + text[1:]
        elif twist == "overflow":
            text = text.replace("1", "1e400", 1)
        payloads.append((text.replace("{, ", "{").replace(", }", "}"), headers))
    return payloads


@PROPERTY
@given(data=st.data())
def test_the_typed_parse_decides_as_the_exact_parse(spark, data):
    """Every column of every record, valid or not, is what the exact VARIANT parse alone makes of it."""
    contract = data.draw(contracts())
    if data.draw(st.booleans()):
        contract = Contract.model_validate({**contract.model_dump(), "tags": {"firmware": "$.fw"}})
    records = data.draw(wild_payloads(contract))
    frame = raw(spark, *(payload for payload, _ in records), headers=[headers for _, headers in records])

    def rows(typed_first: bool) -> list[str]:
        parsed = parse_events(frame, Validation(), contract, typed_first=typed_first)
        return [repr(row.asDict(recursive=True)) for row in parsed.orderBy("offset").collect()]

    assert rows(True) == rows(False)
