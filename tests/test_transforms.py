"""Transforms on tiny literal DataFrames: parsing and every dead-letter reason, windows, duplicates, watermark."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from chispa import assert_df_equality

from streamdash.config import Validation
from streamdash.events import Reason
from streamdash.transforms.aggregate import deduplicate, windowed_aggregates
from streamdash.transforms.parse import dead_letters, parse_events, valid_events

RAW_SCHEMA = "value binary, topic string, partition int, offset long, kafka_timestamp timestamp"
T0 = dt.datetime(2026, 11, 28, 12, 0, 0)
GOOD = {"schemaVersion": 1, "deviceId": "dev-1", "site": "s1", "deviceType": "thermostat",
        "eventTime": "2026-11-28T13:00:00.250+01:00", "seq": 1,
        "measurements": {"temperature": 21.5, "humidity": 40, "pressure": 1013.25, "battery": 0.9}}


def raw(spark, *payloads: str | bytes):
    rows = [(p if isinstance(p, bytes) else p.encode(), "telemetry", 0, offset, T0)
            for offset, p in enumerate(payloads)]
    return spark.createDataFrame(rows, RAW_SCHEMA)


def with_(**changes) -> str:
    event = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if value is ...:
            del event[key]
        else:
            event[key] = value
    return json.dumps(event)


def test_a_valid_event_parses_with_offset_time_and_integer_coercion(spark):
    parsed = valid_events(parse_events(raw(spark, json.dumps(GOOD)), Validation()))
    row = parsed.collect()[0]
    assert (row.device_id, row.site, row.device_type, row.seq) == ("dev-1", "s1", "thermostat", 1)
    assert row.event_time == dt.datetime(2026, 11, 28, 12, 0, 0, 250000)  # session time zone is UTC
    assert (row.temperature, row.humidity, row.pressure, row.battery) == (21.5, 40.0, 1013.25, 0.9)


def test_epoch_millis_unknown_fields_and_missing_device_type(spark):
    payload = with_(eventTime=1795867200250, deviceType=..., firmware={"v": 2})
    row = valid_events(parse_events(raw(spark, payload), Validation())).collect()[0]
    assert row.event_time == dt.datetime(2026, 11, 28, 12, 0, 0, 250000)
    assert row.device_type == "unknown"


@pytest.mark.parametrize(("payload", "reason"), [
    ('{"schemaVersion": 1, "deviceId": ', Reason.MALFORMED_JSON),
    ("[1, 2, 3]", Reason.MALFORMED_JSON),
    ("", Reason.MALFORMED_JSON),
    (b"\xff\xfe\x00garbage", Reason.MALFORMED_JSON),
    (with_(seq=...), Reason.MISSING_FIELD),
    (with_(site=None), Reason.MISSING_FIELD),
    (with_(measurements={}), Reason.MISSING_FIELD),
    (with_(measurements={"temperature": "hot"}), Reason.WRONG_TYPE),
    (with_(deviceId=42), Reason.WRONG_TYPE),
    (with_(deviceId={"$ne": 1}), Reason.WRONG_TYPE),
    (with_(seq=1.5), Reason.WRONG_TYPE),
    (with_(schemaVersion=2), Reason.UNSUPPORTED_SCHEMA_VERSION),
    (with_(eventTime="2026-11-28T12:00:00"), Reason.BAD_EVENT_TIME),
    (with_(eventTime="yesterday"), Reason.BAD_EVENT_TIME),
    (with_(eventTime="2026-13-45T99:00:00Z"), Reason.BAD_EVENT_TIME),
    (with_(deviceId="dev\n1"), Reason.INVALID_IDENTIFIER),
    (with_(deviceId=""), Reason.INVALID_IDENTIFIER),
    (with_(site="ends\\"), Reason.INVALID_IDENTIFIER),
    (with_(deviceId="x" * 129), Reason.INVALID_IDENTIFIER),
    (with_(measurements={"temperature": 1}).replace('"temperature": 1', '"temperature": 1e999'),
     Reason.NON_FINITE_VALUE),
    (with_(padding="x" * 2000), Reason.OVERSIZE),
])
def test_bad_records_get_one_reason_and_keep_their_position(spark, payload, reason):
    parsed = parse_events(raw(spark, json.dumps(GOOD), payload), Validation(max_event_bytes=1024))
    assert valid_events(parsed).count() == 1
    letters = dead_letters(parsed).collect()
    assert [(r.reason, r.partition, r.offset, r.topic) for r in letters] == [(reason, 0, 1, "telemetry")]
    expected_payload = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
    assert letters[0].payload == expected_payload


def test_hostile_but_representable_identifiers_are_valid(spark):
    hostile = 'dev, "1"=\'x\' ✓'
    row = valid_events(parse_events(raw(spark, with_(deviceId=hostile)), Validation())).collect()[0]
    assert row.device_id == hostile


def events(spark, rows):
    """rows: (device, site, seconds after T0, seq, temperature)."""
    return spark.createDataFrame(
        [(d, s, "t", T0 + dt.timedelta(seconds=sec), seq, temp, 50.0, 1000.0, 1.0) for d, s, sec, seq, temp in rows],
        "device_id string, site string, device_type string, event_time timestamp, seq long, "
        "temperature double, humidity double, pressure double, battery double")


def test_tumbling_windows_include_the_start_and_exclude_the_end(spark):
    df = events(spark, [("a", "s", 0, 1, 1.0), ("a", "s", 9.999, 2, 3.0), ("a", "s", 10, 3, 100.0)])
    out = (windowed_aggregates(df, "10 seconds").where("level = 'device'")
           .select("window", "window_start_ns", "count", "temperature_mean", "temperature_last")
           .orderBy("window_start_ns"))
    start_ns = int(T0.replace(tzinfo=dt.UTC).timestamp()) * 1_000_000_000
    rows = [("10s", start_ns, 2, 2.0, 3.0), ("10s", start_ns + 10_000_000_000, 1, 100.0, 100.0)]
    expected = spark.createDataFrame(rows, out.schema)
    assert_df_equality(out, expected)


def test_site_rows_combine_devices_and_stats_are_right(spark):
    df = events(spark, [("a", "s", 1, 1, 1.0), ("b", "s", 2, 1, 2.0), ("b", "s", 3, 2, 6.0), ("c", "t", 1, 1, 7.0)])
    site = windowed_aggregates(df, "1 minute").where("level = 'site' AND site = 's'").collect()[0]
    assert site.device_id is None and site["count"] == 3
    assert (site.temperature_min, site.temperature_max, site.temperature_mean) == (1.0, 6.0, 3.0)
    assert site.temperature_last == 6.0 and site.temperature_p95 == 6.0
    assert site.temperature_stddev == pytest.approx(2.6457513110645907, rel=1e-12)
    single = windowed_aggregates(df, "1 minute").where("device_id = 'a'").collect()[0]
    assert single.temperature_stddev is None  # sample stddev of one value: never written


def test_watermark_drops_late_events_keeps_those_within_and_counts_duplicates_once(spark, tmp_path):
    """A real micro-batch stream over JSON files: batch 1 moves the watermark, batch 2 brings late events."""
    source = tmp_path / "in"
    source.mkdir()
    schema = "device_id string, site string, device_type string, event_time timestamp, seq long, " \
             "temperature double, humidity double, pressure double, battery double"
    stream = deduplicate(spark.readStream.schema(schema).json(str(source)), "10 seconds")
    query = (windowed_aggregates(stream, "10 seconds").where("level = 'device'").writeStream
             .outputMode("update").format("memory").queryName(f"wm_{int(time.time() * 1000)}")
             .option("checkpointLocation", str(tmp_path / "cp")).start())

    def send(name, rows):
        events(spark, rows).write.mode("overwrite").json(str(tmp_path / "staging" / name))
        for part in (tmp_path / "staging" / name).glob("part-*.json"):
            part.rename(source / f"{name}-{part.name}")
        query.processAllAvailable()

    try:
        send("b1", [("a", "s", 0, 1, 1.0), ("a", "s", 60, 2, 2.0)])  # watermark becomes 60 - 10 = 50 s
        send("b2", [("a", "s", 55, 3, 3.0), ("a", "s", 5, 4, 4.0), ("a", "s", 60, 2, 2.0)])  # within, beyond, dup
        final = spark.sql(f"SELECT window_start_ns, `count` AS n FROM {query.name}")
        latest = {r.window_start_ns: r.n for r in final.orderBy("n").collect()}
        start_ns = int(T0.replace(tzinfo=dt.UTC).timestamp()) * 1_000_000_000
        assert latest == {start_ns: 1, start_ns + 50_000_000_000: 1, start_ns + 60_000_000_000: 1}
        dropped = sum(op["numRowsDroppedByWatermark"] for op in query.lastProgress["stateOperators"])
        assert dropped == 1
    finally:
        query.stop()
