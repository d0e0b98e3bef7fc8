"""Fields from beside the body (`transforms.headers`): IoT Hub's properties as Event Hubs' Kafka endpoint delivers
them (AMQP-encoded, here by the Azure SDK's own encoder), a Kafka producer's plain headers, the key and the
broker's time; decoded in Spark and compared with the values sent, and parsed as the contract says."""

from __future__ import annotations

import datetime as dt
import json
import re
import struct
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from streamdash.config import Contract, Settings, Validation
from streamdash.transforms.headers import decoded
from streamdash.transforms.parse import dead_letters, parse_events, valid_events
from streamdash_toolbox.amqp import DEVICE_ID, ENQUEUED_TIME, encoded, iothub_headers
from streamdash_toolbox.testing import REPO
from streamdash_toolbox.testing.records import T0, raw

UTC = dt.UTC
INT_TYPES = {"byte": 8, "short": 16, "int": 32, "long": 64}  # signed, bits
UINT_TYPES = {"ubyte": 8, "ushort": 16, "uint": 32, "ulong": 64}


def amqp_values():
    """(AMQP type, value) pairs as the SDK encodes them, with both the smallest and the full encodings."""
    def ints(name: str, bits: int, signed: bool):
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        return st.tuples(st.just(name), st.integers(low, high), st.booleans())

    floats = st.floats(width=32, allow_nan=False)
    return st.one_of(
        *(ints(name, bits, True) for name, bits in INT_TYPES.items()),
        *(ints(name, bits, False) for name, bits in UINT_TYPES.items()),
        st.tuples(st.sampled_from(["string", "symbol"]), st.text(max_size=300), st.booleans()),
        st.tuples(st.just("binary"), st.text(max_size=20).map(str.encode), st.booleans()),
        st.tuples(st.just("double"), st.floats(allow_nan=False), st.just(True)),
        st.tuples(st.just("float"), floats, st.just(True)),
        st.tuples(st.just("boolean"), st.booleans(), st.just(True)),
        st.tuples(st.just("timestamp"), st.datetimes(dt.datetime(1700, 1, 1), dt.datetime(2200, 1, 1))
                  .map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000, tzinfo=UTC)), st.just(True)),
        st.tuples(st.just("uuid"), st.uuids(), st.just(True)),
    )


def sent(amqp_type: str, value):
    """What the decoded VARIANT should hold."""
    if amqp_type == "binary":
        return value.decode()
    if amqp_type == "uuid":
        return str(value)
    if amqp_type == "ulong" and value >= 2**63:
        return Decimal(value)  # beyond a long: a decimal, as JSON's 20-digit numbers are
    if amqp_type == "float":
        return struct.unpack(">f", struct.pack(">f", value))[0]
    return value


def decode(spark, values: list[bytes], text: bool, encoding: str = "auto") -> list:
    frame = spark.createDataFrame([(value,) for value in values], "value binary")
    rows = frame.select(decoded(F.col("value"), text, encoding).alias("v")).collect()
    return [row.v.toPython() if row.v is not None else None for row in rows]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(amqp_values(), min_size=1, max_size=40))
def test_every_amqp_value_the_sdk_encodes_decodes_to_what_was_sent(spark, values):
    """`amqp` reads every AMQP value; `auto` those whose bytes are not plain text, and the others as text."""
    encodings = [encoded(value, amqp_type, smallest) for amqp_type, value, smallest in values]
    as_number = decode(spark, encodings, text=False, encoding="amqp")
    assert decode(spark, encodings, text=True, encoding="amqp") == as_number
    as_text = decode(spark, encodings, text=True)
    for (amqp_type, value, _), raw_bytes, number, text in zip(values, encodings, as_number, as_text, strict=True):
        expected = sent(amqp_type, value)
        if amqp_type == "timestamp":
            assert number == expected.replace(tzinfo=None) or number == expected, (value, raw_bytes)
        elif isinstance(expected, float) and expected == 0:
            assert number == 0 and str(number).startswith("-") == str(expected).startswith("-"), raw_bytes
        else:
            assert number == expected and type(number) is type(expected), (amqp_type, value, raw_bytes, number)
        try:
            is_text = not re.search(r"[\x00-\x1f\x7f]", raw_bytes.decode("utf-8"))
        except UnicodeDecodeError:
            is_text = False
        assert text == (raw_bytes.decode() if is_text else number), raw_bytes


def test_a_kafka_producer_s_plain_bytes_are_text_or_json(spark):
    values = [b"site-1", b"pump1", b"21.5", b"-3", b"true", b"2026-11-28T12:00:00Z", b"", b"\xa1\x05ab"]
    assert decode(spark, values, text=True) == ["site-1", "pump1", "21.5", "-3", "true", "2026-11-28T12:00:00Z", "",
                                                "\ufffd\x05ab"]
    numbers = decode(spark, values, text=False)
    assert numbers[2:5] == [21.5, -3, True]  # JSON where the text is JSON
    assert numbers[0] == "site-1" and numbers[5] == "2026-11-28T12:00:00Z"
    assert numbers[-1] == "\ufffd\x05ab", "a length that does not match is not AMQP"
    assert decode(spark, [b"abc", b"a\nb"], text=False) == ["abc", 2658], "text unless it cannot be"
    assert decode(spark, [b"abc", b"a\nb", b"\x54\x03"], text=False, encoding="plain") == ["abc", "a\nb", "T\x03"]


def iothub_contract(**changes) -> Contract:
    return Contract.model_validate({
        "device_id": f"header:{DEVICE_ID}", "site": "header:site", "device_type": "", "sequence": "",
        "schema_version": False, "event_time": f"header:{ENQUEUED_TIME}",
        "measurements": {"temperature": {"path": "$.temperature"}, "humidity": {"path": "$.humidity"},
                         "door_open": {"path": "header:door", "booleans": True}},
        "tags": {"firmware": "header:fw"}, **changes})


def test_an_iothub_record_parses_from_its_headers_and_body(spark):
    enqueued = T0.astimezone(UTC) - dt.timedelta(seconds=2)  # T0: the broker's append time, local
    headers = [iothub_headers("pump-7", enqueued, {"site": "plant-a", "door": True, "fw": 3}),
               iothub_headers("pump-8", enqueued, {"site": "plant-a", "door": False}),
               [(name, value) for name, value in iothub_headers("pump-9", enqueued, {"site": "x"})
                if name != DEVICE_ID]]
    body = json.dumps({"temperature": 21.5, "humidity": 40})
    frame = parse_events(raw(spark, body, body, body, headers=headers), Validation(), iothub_contract())
    parsed = frame.collect()
    assert [row.error for row in parsed] == [None, None, "missing_field"]
    [letter] = dead_letters(frame).collect()
    assert [(h.key, bytes(h.value)) for h in letter.headers] == headers[2], "a dead letter keeps its headers"
    first, second = parsed[0], parsed[1]
    assert (first.device_id, first.site, first.device_type) == ("pump-7", "plant-a", "unknown")
    assert first.event_time == enqueued.astimezone().replace(tzinfo=None)
    assert (first.temperature, first.door_open, second.door_open) == (21.5, 1.0, 0.0)
    assert first.tags.firmware == "3" and second.tags.firmware is None


def test_an_iothub_string_property_is_a_number_only_with_numeric_strings(spark):
    headers = [iothub_headers("pump-7", T0.astimezone(UTC), {"site": "a", "door": "40.5"})]
    contract = iothub_contract(measurements={"tank": {"path": "header:door"}})
    [row] = parse_events(raw(spark, "{}", headers=headers), Validation(), contract).collect()
    assert row.error == "wrong_type"
    contract = iothub_contract(measurements={"tank": {"path": "header:door", "numeric_strings": True}})
    [row] = parse_events(raw(spark, "{}", headers=headers), Validation(), contract).collect()
    assert (row.error, row.tank) == (None, 40.5)


def test_the_key_and_the_broker_s_time_are_fields_too(spark):
    contract = Contract.model_validate({
        "device_id": "key", "site": "$.site", "event_time": "timestamp", "event_time_formats": ["iso8601"],
        "device_type": "", "sequence": "", "schema_version": False,
        "measurements": {"power": {"path": "header:power"}}})
    plain = [[("power", b"7.25")], [("power", b"seven")], []]
    records = raw(spark, '{"site": "s"}', '{"site": "s"}', '{"site": "s"}', headers=plain,
                  keys=["meter-1", "meter-2", None])
    rows = parse_events(records, Validation(), contract).collect()
    assert [row.error for row in rows] == [None, "wrong_type", "missing_field"]
    [event] = valid_events(parse_events(records, Validation(), contract)).collect()
    assert (event.device_id, event.power, event.event_time) == ("meter-1", 7.25, T0)


@pytest.mark.parametrize(("changes", "message"), [
    ({"site": "timestamp"}, "can only be the event_time"),
    ({"site": "header:"}, "not a JSON path"),
    ({"site": "header:a\nb"}, "not a JSON path"),
    ({"device_id": "value"}, "not a JSON path"),
])
def test_a_path_beside_the_body_is_checked(changes, message):
    with pytest.raises(ValueError, match=message):
        Contract.model_validate(changes)


def test_headers_need_the_kafka_source(monkeypatch):
    from streamdash.config import load_settings

    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    settings = load_settings("local", REPO / "conf", ["contract.site='header:site'"])
    assert settings.contract.reads_headers()
    native = {"kind": "eventhubs_native", "connection_string": "Endpoint=sb://x/;EntityPath=t"}
    with pytest.raises(ValueError, match="need source.kind = 'kafka'"):
        Settings.model_validate({**settings.model_dump(exclude={"source"}), "source": native})
