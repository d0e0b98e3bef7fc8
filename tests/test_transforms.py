"""Transforms on tiny literal DataFrames: parsing and every dead-letter reason, windows, duplicates, watermark."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
import uuid
from collections import Counter

import pytest
from chispa import assert_df_equality

from streamdash.config import Contract, Measurement, Validation
from streamdash.events import Reason
from streamdash.sinks.points import aggregate_line
from streamdash.sources.kafka import CREATE_TIME
from streamdash.transforms.aggregate import deduplicate, windowed_aggregates
from streamdash.transforms.parse import dead_letters, parse_events, plan, typed_schema, valid_events
from streamdash_toolbox.testing.records import GOOD, T0, changed, raw, with_


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
    (with_(deviceId="   "), Reason.INVALID_IDENTIFIER),
    (with_(site=" "), Reason.INVALID_IDENTIFIER),
    (with_(site="\t"), Reason.INVALID_IDENTIFIER),
    (with_(deviceType="\u00a0\u3000"), Reason.INVALID_IDENTIFIER),
    (with_(eventTime=1.0), Reason.WRONG_TYPE),
    (with_(eventTime=1e308), Reason.WRONG_TYPE),
    (with_(eventTime=99999999999999999999), Reason.WRONG_TYPE),
    (with_(measurements={"temperature": 1}).replace('"temperature": 1', '"temperature": 1e999'),
     Reason.NON_FINITE_VALUE),
    (with_(padding="x" * 2000), Reason.OVERSIZE),
    (with_(seq=2).replace('"seq": 2', '"seq": NaN'), Reason.MALFORMED_JSON),
    ("{'schemaVersion': 1, 'deviceId': 'dev-1'}", Reason.MALFORMED_JSON),
    ("null", Reason.MALFORMED_JSON),
    ('"text"', Reason.MALFORMED_JSON),
])
def test_bad_records_get_one_reason_and_keep_their_position(spark, payload, reason):
    parsed = parse_events(raw(spark, json.dumps(GOOD), payload), Validation(max_event_bytes=1024))
    assert valid_events(parsed).count() == 1
    letters = dead_letters(parsed).collect()
    assert [(r.reason, r.partition, r.offset, r.topic) for r in letters] == [(reason, 0, 1, "telemetry")]
    expected_payload = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
    assert letters[0].payload == expected_payload


@pytest.mark.parametrize("typed_first", [True, False])
def test_an_object_with_a_lone_surrogate_key_is_judged_like_any_object(spark, typed_first):
    """Spark's `schema_of_variant` fails on an object whose keys include a lone UTF-16 surrogate escape: one such
    record from one device used to fail every batch that read it."""
    hostile = '{"\\udfb3": 1, "b": 2}'
    payloads = [json.dumps(GOOD),
                with_(measurements={"temperature": "X"}).replace('"X"', hostile),
                with_(deviceId="X").replace('"X"', hostile),
                with_(eventTime="X").replace('"X"', hostile),
                with_(measurements={"temperature": 21.5, "X": 1}).replace('"X"', '"\\udfb3"'),
                with_(extra="X").replace('"X"', hostile)]
    parsed = parse_events(raw(spark, *payloads), Validation(), typed_first=typed_first)
    assert {r.offset: r.reason for r in dead_letters(parsed).collect()} == {1: Reason.WRONG_TYPE,
                                                                           2: Reason.WRONG_TYPE, 3: Reason.WRONG_TYPE}
    assert valid_events(parsed).count() == 3


BROKER_MS = int(T0.replace(tzinfo=dt.UTC).timestamp() * 1000)  # the records' kafka_timestamp


@pytest.mark.parametrize("event_time", [
    "9999-12-31T23:59:59.999999999Z", "0001-01-01T00:00:00Z", "2200-01-01T00:00:00Z", "1970-01-01T00:00:00Z",
    "2262-04-11T23:47:16.854775807Z", "1677-09-21T00:12:43.145224192Z",
    253402300800000, 9223372036854775807, -9223372036854775808, 9223372036854775, 0, -1,
    BROKER_MS + 5_000 + 1, BROKER_MS - 7 * 86_400_000 - 1,
])
def test_event_times_far_from_the_broker_time_are_out_of_range_and_never_overflow(spark, event_time):
    """ANSI mode is on (as on Databricks), so any overflow in any expression would throw here."""
    assert spark.conf.get("spark.sql.ansi.enabled") == "true"
    parsed = parse_events(raw(spark, json.dumps(GOOD), with_(eventTime=event_time)), Validation())
    assert [(r.reason, r.offset) for r in dead_letters(parsed).collect()] == [(Reason.EVENT_TIME_OUT_OF_RANGE, 1)]
    events = deduplicate(valid_events(parsed), "30 seconds")
    assert windowed_aggregates(events, ["10 seconds"]).where("level = 'site'").collect()[0]["count"] == 1


@pytest.mark.parametrize("event_time", [BROKER_MS + 5_000, BROKER_MS - 7 * 86_400_000,
                                        "2026-11-28T12:00:04.999Z", "2026-11-21T12:00:00Z"])
def test_event_times_at_the_bounds_are_valid(spark, event_time):
    assert valid_events(parse_events(raw(spark, with_(eventTime=event_time)), Validation())).count() == 1


def test_the_bounds_are_configurable(spark):
    validation = Validation(max_event_time_ahead="1 second", max_event_time_behind="2 hours")
    payloads = [with_(eventTime=BROKER_MS + 2000), with_(eventTime=BROKER_MS - 3 * 3_600_000),
                with_(eventTime=BROKER_MS - 3_600_000)]
    parsed = parse_events(raw(spark, *payloads), validation)
    assert sorted((r.offset, r.reason) for r in dead_letters(parsed).collect()) == [
        (0, Reason.EVENT_TIME_OUT_OF_RANGE), (1, Reason.EVENT_TIME_OUT_OF_RANGE)]


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.mark.parametrize(("event_ahead_ms", "producer_ahead_ms"), [(14 * 60_000, 14 * 60_000),
                                                                    (59 * 60_000, 59 * 60_000), (60_000, 0)],
                         ids=["14-min-fast-producer", "59-min-fast-producer", "1-min-fast-device"])
def test_a_producer_s_own_timestamp_does_not_vouch_for_its_event_time(spark, event_ahead_ms, producer_ahead_ms):
    """Kafka's default CreateTime is the producer's clock: the event time is judged against the read time."""
    stamped = dt.datetime.fromtimestamp((now_ms() + producer_ahead_ms) / 1000, dt.UTC).replace(tzinfo=None)
    payload = with_(eventTime=now_ms() + event_ahead_ms)
    parsed = parse_events(raw(spark, payload, timestamp=stamped, timestamp_type=CREATE_TIME), Validation())
    assert [r.reason for r in dead_letters(parsed).collect()] == [Reason.EVENT_TIME_OUT_OF_RANGE]


def test_an_event_stamped_at_the_epoch_by_a_producer_at_the_epoch_is_out_of_range(spark):
    epoch = dt.datetime(1970, 1, 1, 0, 0, 0, 1000)
    parsed = parse_events(raw(spark, with_(eventTime=1), timestamp=epoch, timestamp_type=CREATE_TIME), Validation())
    assert [r.reason for r in dead_letters(parsed).collect()] == [Reason.EVENT_TIME_OUT_OF_RANGE]


def test_the_append_time_is_the_reference_even_when_the_batch_reads_it_much_later(spark):
    """A backlog read an hour after it was appended: an event 10 minutes ahead of its append time is early,
    though it is long past by the time of the read (it would move the watermark past the rest of the backlog)."""
    hour_ago = dt.datetime.fromtimestamp(now_ms() / 1000 - 3600, dt.UTC).replace(tzinfo=None)
    appended_ms = int(hour_ago.replace(tzinfo=dt.UTC).timestamp() * 1000)
    payloads = [with_(eventTime=appended_ms + 10 * 60_000), with_(eventTime=appended_ms - 1000)]
    parsed = parse_events(raw(spark, *payloads, timestamp=hour_ago), Validation())
    assert [(r.offset, r.reason) for r in dead_letters(parsed).collect()] == [(0, Reason.EVENT_TIME_OUT_OF_RANGE)]


def test_a_new_batch_time_recompiles_a_small_projection_not_the_parse(spark):
    """Spark writes a query's current time into its generated code as a constant. A stream's is new every
    micro-batch (a batch query's, every run, as here): whatever code holds it is compiled again. That must be a small
    projection, not the parse: its classes compiled again each batch cost ~100 ms of CPU and never got warm."""
    metrics = spark._jvm.org.apache.spark.metrics.source.CodegenMetrics

    def sizes_compiled_by(run) -> Counter:
        """The source sizes of the classes Spark compiled during `run()`."""
        before = Counter(metrics.METRIC_SOURCE_CODE_SIZE().getSnapshot().getValues())
        run()
        return Counter(metrics.METRIC_SOURCE_CODE_SIZE().getSnapshot().getValues()) - before

    validation = Validation(max_identifier_length=1000 + uuid.uuid4().int % 3000)  # a parse no other test compiled

    def parse():
        assert valid_events(parse_events(raw(spark, *[with_(seq=seq) for seq in range(3)]), validation)).count() == 3

    first = sizes_compiled_by(parse)
    again = sizes_compiled_by(parse)
    assert sum(again.elements()) < max(first) / 10, (sorted(again.elements()), sorted(first.elements()))


def test_early_events_can_be_adjusted_to_the_reference_time_and_are_flagged(spark):
    validation = Validation(early_events="adjust")
    payloads = [with_(eventTime=BROKER_MS + 14 * 60_000), with_(eventTime=BROKER_MS - 1000),
                with_(eventTime=BROKER_MS + 5_000), with_(eventTime=BROKER_MS + 14 * 60_000, deviceId="")]
    parsed = parse_events(raw(spark, *payloads), validation).orderBy("offset").collect()
    assert [(r.error, r.event_time_adjusted) for r in parsed] == [
        (None, True), (None, False), (None, False), (Reason.INVALID_IDENTIFIER, False)]
    assert parsed[0].event_time == T0  # the record's append time
    assert parsed[1].event_time == T0 - dt.timedelta(seconds=1)
    unstorable = parse_events(raw(spark, with_(eventTime="9999-01-01T00:00:00Z")), validation).collect()[0]
    assert (unstorable.error, unstorable.event_time_adjusted) == (Reason.EVENT_TIME_OUT_OF_RANGE, False)


def test_values_outside_a_configured_range_are_dead_letters(spark):
    measurements = Contract().measurements
    contract = Contract(measurements={**measurements, "temperature": Measurement(
        path=measurements["temperature"].path, range=(-80, 150))})
    payloads = [with_(measurements={"temperature": 151}), with_(measurements={"temperature": -80, "humidity": 1e9})]
    parsed = parse_events(raw(spark, *payloads), Validation(), contract)
    assert [(r.offset, r.reason) for r in dead_letters(parsed).collect()] == [(0, Reason.VALUE_OUT_OF_RANGE)]
    assert parse_events(raw(spark, *payloads), Validation()).where("error IS NOT NULL").count() == 0


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
    out = (windowed_aggregates(df, ["10 seconds"]).where("level = 'device'")
           .select("window", "window_start_ns", "count", "temperature_mean", "temperature_last")
           .orderBy("window_start_ns"))
    start_ns = int(T0.replace(tzinfo=dt.UTC).timestamp()) * 1_000_000_000
    rows = [("10s", start_ns, 2, 2.0, 3.0), ("10s", start_ns + 10_000_000_000, 1, 100.0, 100.0)]
    expected = spark.createDataFrame(rows, out.schema)
    assert_df_equality(out, expected)


def test_site_rows_combine_devices_and_stats_are_right(spark):
    df = events(spark, [("a", "s", 1, 1, 1.0), ("b", "s", 2, 1, 2.0), ("b", "s", 3, 2, 6.0), ("c", "t", 1, 1, 7.0)])
    site = windowed_aggregates(df, ["1 minute"]).where("level = 'site' AND site = 's'").collect()[0]
    assert site.device_id is None and site["count"] == 3
    assert (site.temperature_min, site.temperature_max, site.temperature_mean) == (1.0, 6.0, 3.0)
    assert site.temperature_last == 6.0 and site.temperature_p95 == 6.0
    assert site.temperature_stddev == pytest.approx(2.6457513110645907, rel=1e-12)
    single = windowed_aggregates(df, ["1 minute"]).where("device_id = 'a'").collect()[0]
    assert single.temperature_stddev is None  # sample stddev of one value: never written


def test_every_size_in_one_aggregation_equals_each_size_alone(spark):
    df = events(spark, [("a", "s", 1, 1, 1.0), ("b", "s", 12, 1, 2.0), ("a", "s", 35, 2, 6.0), ("c", "t", 59, 1, 7.0),
                        ("a", "s", 61, 3, 3.0)])
    together = windowed_aggregates(df, ["10 seconds", "30 seconds", "1 minute"])
    alone = [windowed_aggregates(df, [size]) for size in ("10 seconds", "30 seconds", "1 minute")]
    expected = alone[0].unionByName(alone[1]).unionByName(alone[2])
    order = ["window", "level", "site", "device_id", "window_start_ns"]
    assert_df_equality(together.orderBy(order), expected.orderBy(order), ignore_nullable=True)


def test_p95_is_within_the_sketch_rank_error(spark):
    rows = [("a", "s", i / 1000, i, float(v)) for i, v in enumerate(range(1000, 0, -1))]  # 1000 values, any order
    p95 = windowed_aggregates(events(spark, rows), ["10 seconds"]).where("level = 'site'").collect()[0].temperature_p95
    assert p95 == int(p95) and abs(p95 - 950) <= 0.0165 * 1000  # an observed value, rank within the KLL bound


class DeviceWindows:
    """A real micro-batch stream over JSON files: deduplicated (10 s watermark) device windows of 10 s into a memory
    table; `send` writes one batch of `events` rows and processes it."""

    def __init__(self, spark, tmp_path, name: str):
        self.spark, self.staging, self.source = spark, tmp_path / "staging", tmp_path / "in"
        self.source.mkdir()
        stream = deduplicate(spark.readStream.schema(events(spark, []).schema).json(str(self.source)), "10 seconds")
        self.query = (windowed_aggregates(stream, ["10 seconds"]).where("level = 'device'").writeStream
                      .outputMode("update").format("memory").queryName(f"{name}_{int(time.time() * 1000)}")
                      .option("checkpointLocation", str(tmp_path / "cp")).start())

    def send(self, name, rows) -> None:
        events(self.spark, rows).write.mode("overwrite").json(str(self.staging / name))
        for part in (self.staging / name).glob("part-*.json"):
            part.rename(self.source / f"{name}-{part.name}")
        self.query.processAllAvailable()


def test_watermark_drops_late_events_keeps_those_within_and_counts_duplicates_once(spark, tmp_path):
    """Batch 1 moves the watermark, batch 2 brings late events."""
    windows = DeviceWindows(spark, tmp_path, "wm")
    try:
        windows.send("b1", [("a", "s", 0, 1, 1.0), ("a", "s", 60, 2, 2.0)])  # watermark becomes 60 - 10 = 50 s
        # within the watermark, beyond it, a duplicate
        windows.send("b2", [("a", "s", 55, 3, 3.0), ("a", "s", 5, 4, 4.0), ("a", "s", 60, 2, 2.0)])
        final = spark.sql(f"SELECT window_start_ns, `count` AS n FROM {windows.query.name}")
        latest = {r.window_start_ns: r.n for r in final.orderBy("n").collect()}
        start_ns = int(T0.replace(tzinfo=dt.UTC).timestamp()) * 1_000_000_000
        assert latest == {start_ns: 1, start_ns + 50_000_000_000: 1, start_ns + 60_000_000_000: 1}
        dropped = sum(op["numRowsDroppedByWatermark"] for op in windows.query.lastProgress["stateOperators"])
        assert dropped == 1
    finally:
        windows.query.stop()


def test_a_statistic_that_overflows_is_left_out_and_counted(spark):
    """Finite values whose sum or variance exceeds a double: the point keeps what is representable."""
    df = events(spark, [("a", "s", 1, 1, 1.7e308), ("a", "s", 2, 2, 1.7e308)])
    row = windowed_aggregates(df, ["10 seconds"]).where("level = 'device'").collect()[0].asDict()
    point = aggregate_line(Contract(), row)
    assert "temperature_max=1.7e+308" in point and "temperature_p95=1.7e+308" in point
    assert "temperature_mean=" not in point and "stats_overflowed=" in point
    overflowed = int(point.split("stats_overflowed=")[1].split("i")[0])
    assert overflowed == sum(1 for name in ("temperature_mean", "temperature_stddev") if not math.isfinite(row[name]))
    assert overflowed >= 1
    representable = {**row, "temperature_mean": 1.0, "temperature_stddev": 0.0}
    assert "humidity_mean=50.0" in point and "stats_overflowed" not in aggregate_line(Contract(), representable)


@pytest.mark.parametrize("others", [{}, {"humidity": None, "pressure": None, "battery": None}],
                         ids=["absent", "null"])
def test_a_measurement_without_a_value_in_a_window_gets_no_statistics_and_fails_nothing(spark, others):
    """A device type without a sensor (or one reporting null): its windows hold empty sketches for that sensor,
    whose quantile Spark refuses. Nothing fails; the point has only the statistics that exist."""
    payloads = [with_(seq=seq, measurements={"temperature": 20.0 + seq, **others}) for seq in (1, 2, 3)]
    events = deduplicate(valid_events(parse_events(raw(spark, *payloads), Validation())), "30 seconds")
    rows = [row.asDict() for row in windowed_aggregates(events, ["10 seconds"]).collect()]
    assert sorted(row["level"] for row in rows) == ["device", "site"]
    for row in rows:
        assert (row["count"], row["temperature_p95"], row["temperature_min"]) == (3, 23.0, 21.0)
        assert all(row[f"{m}_{stat}"] is None for m in ("humidity", "pressure", "battery")
                   for stat in ("mean", "min", "max", "last", "stddev", "p95"))
        point = aggregate_line(Contract(), row)
        assert "temperature_p95=23.0" in point and "humidity" not in point and "battery" not in point


@pytest.mark.parametrize("values", [[5.0], [-0.0, 0.0], [1.7e308, -1.7e308], [5e-324, 5e-324], [1e-300, 1e300]],
                         ids=["single", "signed-zeros", "opposite-extremes", "subnormal", "wide-range"])
def test_every_statistic_takes_the_edges_of_valid_input(spark, values):
    rows = [("a", "s", i / 10, i, value) for i, value in enumerate(values)]
    row = windowed_aggregates(events(spark, rows), ["10 seconds"]).where("level = 'device'").collect()[0].asDict()
    assert row["count"] == len(values) and row["temperature_min"] == min(values)
    assert row["temperature_max"] == max(values) and row["temperature_p95"] in values
    assert aggregate_line(Contract(), row).startswith("telemetry_device,")


def test_a_device_that_restarts_its_sequence_is_not_its_own_duplicate_and_true_duplicates_are_counted(spark,
                                                                                                      tmp_path):
    """A reboot: the same seqs again, at later times, while the first ones are still in the deduplication's state
    (the watermark has not passed them). They count; exact re-deliveries count once and are reported dropped."""
    windows = DeviceWindows(spark, tmp_path, "reboot")
    try:
        windows.send("b1", [("a", "s", 0, 1, 1.0), ("a", "s", 1, 2, 2.0)])  # watermark becomes 1 - 10 = -9 s
        windows.send("b2", [("a", "s", 5, 1, 3.0), ("a", "s", 6, 2, 4.0),  # rebooted: seq 1 and 2 again, later
                            ("a", "s", 1, 2, 2.0), ("a", "s", 6, 2, 4.0)])  # two re-deliveries
        final = spark.sql(f"SELECT `count` AS n, temperature_mean AS mean FROM {windows.query.name}").collect()
        assert max((r.n, r.mean) for r in final) == (4, 2.5)
        dropped = sum(int(op["customMetrics"].get("numDroppedDuplicateRows", 0))
                      for progress in windows.query.recentProgress for op in progress["stateOperators"])
        assert dropped == 2  # (the last progress may be a batch without data, which evicts expired state)
    finally:
        windows.query.stop()


FLAT = Contract.model_validate({
    "device_id": "$.id", "site": "$.loc", "device_type": None, "default_device_type": "meter", "event_time": "$.ts",
    "event_time_formats": ["epoch_s", "iso8601"], "sequence": None, "schema_version": None,
    "measurements": {"co2": {"path": "$.co2"}, "rpm": {"path": "$.rpm", "range": [0, 10000]},
                     "vibration_x": {"path": "$.vib.x"}, "door_open": {"path": "$['door state'].open"}},
    "tags": {"firmware": "$.fw"}, "statistics": ["mean", "max", "p95"]})
T0_S = int(T0.replace(tzinfo=dt.UTC).timestamp())


def flat(**fields) -> str:
    return changed({"id": "m-1", "loc": "plant-1", "ts": T0_S, "co2": 400, "rpm": 1200.5, "vib": {"x": 0.25},
                    "door state": {"open": 0}, "fw": "2.1"}, **fields)


def test_a_flat_payload_with_its_own_field_names_parses_as_its_contract_says(spark):
    payloads = [flat(), flat(ts=T0_S + 1.5, fw=7, co2=None), flat(ts="2026-11-28T12:00:02Z", id="m-2", fw=...)]
    rows = valid_events(parse_events(raw(spark, *payloads), Validation(), FLAT)).orderBy("event_time").collect()
    assert [(r.device_id, r.site, r.device_type, r.seq) for r in rows] == [
        ("m-1", "plant-1", "meter", None), ("m-1", "plant-1", "meter", None), ("m-2", "plant-1", "meter", None)]
    assert [r.event_time for r in rows] == [T0, T0 + dt.timedelta(seconds=1.5), T0 + dt.timedelta(seconds=2)]
    assert [(r.co2, r.rpm, r.vibration_x, r.door_open) for r in rows] == [
        (400.0, 1200.5, 0.25, 0.0), (None, 1200.5, 0.25, 0.0), (400.0, 1200.5, 0.25, 0.0)]
    assert [r.tags.firmware for r in rows] == ["2.1", "7", None]


@pytest.mark.parametrize(("payload", "reason"), [
    (flat(id=...), Reason.MISSING_FIELD),
    (flat(loc=None), Reason.MISSING_FIELD),
    (flat(co2=None, rpm=..., vib={}, **{"door state": {}}), Reason.MISSING_FIELD),
    (flat(ts=1795867200123), Reason.EVENT_TIME_OUT_OF_RANGE),  # milliseconds read as seconds: year 58,878
    (flat(ts="2026-11-28T12:00:00"), Reason.BAD_EVENT_TIME),
    (flat(ts=True), Reason.WRONG_TYPE),
    (flat(vib=3), Reason.WRONG_TYPE),
    (flat(vib={"x": "high"}), Reason.WRONG_TYPE),
    (flat(fw={"v": 1}), Reason.WRONG_TYPE),
    (flat(fw="a\nb"), Reason.INVALID_IDENTIFIER),
    (flat(rpm=10001), Reason.VALUE_OUT_OF_RANGE),
    (flat(schemaVersion="anything", seq="anything"), None),  # not in this contract: ignored
])
def test_each_field_of_another_contract_is_checked_as_it_says(spark, payload, reason):
    parsed = parse_events(raw(spark, payload), Validation(), FLAT).collect()
    assert parsed[0].error == reason


def test_without_a_sequence_duplicates_are_the_same_device_and_event_time_and_statistics_follow_the_contract(spark):
    payloads = [flat(), flat(), flat(ts=T0_S + 1, co2=600), flat(id="m-2", co2=800)]
    events = deduplicate(valid_events(parse_events(raw(spark, *payloads), Validation(), FLAT)), "30 seconds")
    rows = windowed_aggregates(events, ["10 seconds"], contract=FLAT)
    assert rows.columns == ["level", "window", "window_start_ns", "site", "device_type", "device_id", "tags", "count",
                            "newest_event_ns", *FLAT.stat_columns()]
    by_key = {(r.level, r.device_id): r.asDict(recursive=True) for r in rows.collect()}
    assert by_key[("device", "m-1")]["newest_event_ns"] == (T0_S + 1) * 1_000_000_000  # the freshness metric's input
    assert "newest_event" not in aggregate_line(FLAT, by_key[("device", "m-1")])
    assert (by_key[("device", "m-1")]["count"], by_key[("device", "m-1")]["co2_mean"]) == (2, 500.0)
    assert by_key[("device", "m-1")]["tags"] == {"firmware": "2.1"} and by_key[("site", None)]["tags"] is None
    assert (by_key[("site", None)]["count"], by_key[("site", None)]["co2_max"]) == (3, 800.0)
    point = aggregate_line(FLAT, by_key[("device", "m-1")])
    assert ",firmware=2.1," in point and "co2_p95=600.0" in point and "co2_min" not in point
    kept = deduplicate(valid_events(parse_events(raw(spark, *payloads), Validation(), FLAT)), "30 seconds", None)
    assert kept.count() == 4


PUMP = Contract(device_id="$.id", site="$.site", event_time="$.ts", sequence=None, device_type=None,
                schema_version=None, measurements={
                    "door": Measurement(path="$.door", booleans=True),
                    "tank": Measurement(path="$.tank", numeric_strings=True, range=(0, 100)),
                    "flow": Measurement(path="$.flow")})


def pump(**fields) -> str:
    return changed({"id": "p-1", "site": "s1", "ts": "2026-11-28T12:00:00Z", "door": False, "tank": "40.5",
                    "flow": 2.5}, **fields)


@pytest.mark.parametrize(("payload", "values", "reason"), [
    (pump(), (0.0, 40.5, 2.5), None),
    (pump(door=True, tank="-1e1", flow=...), (1.0, -10.0, None), Reason.VALUE_OUT_OF_RANGE),
    (pump(door=1, tank=7), (1.0, 7.0, 2.5), None),  # numbers stay numbers
    (pump(tank="4O"), None, Reason.WRONG_TYPE),
    (pump(tank=" 40"), None, Reason.WRONG_TYPE),  # a JSON number's text, nothing around it
    (pump(tank="NaN"), None, Reason.WRONG_TYPE),
    (pump(tank="1e999"), None, Reason.NON_FINITE_VALUE),
    (pump(door="true"), None, Reason.WRONG_TYPE),
    (pump(flow=True), None, Reason.WRONG_TYPE),  # not opted in
    (pump(flow="2.5"), None, Reason.WRONG_TYPE),
])
def test_booleans_and_numeric_strings_are_numbers_where_the_contract_opts_in(spark, payload, values, reason):
    [row] = parse_events(raw(spark, payload), Validation(), PUMP).collect()
    assert row.error == reason
    if values and not reason:
        assert (row.door, row.tank, row.flow) == values


@pytest.mark.parametrize("contract", [
    Contract(), FLAT, PUMP,
    PUMP.model_copy(update={"device_id": "header:iothub-connection-device-id", "event_time": "timestamp"}),
    Contract.model_validate({"sequence": "", "schema_version": False, "measurements": {"temp": {}},
                             "readings": {"array": "$.readings", "name": "$.n", "value": "$.v"}}),
], ids=["default", "flat", "pump", "headers", "readings"])
def test_every_shape_of_contract_plans_the_typed_parse_first(spark, contract):
    """A plan without the typed parse still decides every record alike (the exact parse decides as it does, which the
    property tests check), only a third dearer; this is what notices it."""
    assert typed_schema(plan(contract)) is not None


def test_dropping_only_bad_values_keeps_the_record_and_counts_each_by_reason(spark, tmp_path):
    """With `bad_values = "drop_value"` a bad value is left out of its windows and counted by reason in the
    query's progress; a record left with no value is a dead letter with the first bad value's reason."""
    contract = PUMP.model_copy(update={"bad_values": "drop_value"})
    payloads = [pump(tank="high"), pump(tank="500", flow="x"), pump(flow=float("inf")).replace("Infinity", "1e999"),
                pump(door="open", tank="101", flow=...), pump(door=None, tank=None, flow=[1])]
    raw(spark, *payloads).write.parquet(str(tmp_path / "records"))
    stream = spark.readStream.schema(raw(spark, "{}").schema).parquet(str(tmp_path / "records"))
    parsed = parse_events(stream, Validation(), contract)
    rows = {}
    query = (parsed.writeStream.trigger(availableNow=True)
             .foreachBatch(lambda batch, _: rows.update({r.offset: r for r in batch.collect()})).start())
    query.awaitTermination()
    assert [(rows[i].error, rows[i].door, rows[i].tank, rows[i].flow) for i in range(len(payloads))] == [
        (None, 0.0, None, 2.5), (None, 0.0, None, None), (None, 0.0, 40.5, None),
        (Reason.WRONG_TYPE, None, None, None), (Reason.WRONG_TYPE, None, None, None)]
    dropped = query.lastProgress["observedMetrics"]["dropped_values"].asDict()
    assert dropped == {"wrong_type": 2, "non_finite_value": 1, "value_out_of_range": 1}


def test_mixed_case_names_the_validation_accepts_run_through_the_parse_and_the_windows(spark):
    """Spark resolves names in any case: what the contract accepts must not meet a column of the job's own there."""
    contract = Contract(device_id="$.DeviceId", site="$.Site", event_time="$.Time", sequence="$.SEQ",
                        device_type=None, schema_version=None, tags={"Firmware": "$.Meta.FW"},
                        measurements={"Temp": Measurement(path="$.Meta.Temp"), "siteTemp": Measurement(path="$.temp"),
                                      "Keys": Measurement(path="$.key"), "Ingested": Measurement(path="$.ingested_at")})
    payload = json.dumps({"DeviceId": "d-1", "Site": "s1", "Time": "2026-11-28T12:00:00Z", "SEQ": 1, "temp": 2,
                          "key": 3, "ingested_at": 4, "Meta": {"FW": "1.0", "Temp": 21.5}})
    events = valid_events(parse_events(raw(spark, payload), Validation(), contract))
    [row] = windowed_aggregates(deduplicate(events, "30 seconds"), ["10 seconds"], contract=contract).where(
        "level = 'device'").collect()
    assert (row.Temp_mean, row.siteTemp_last, row.Keys_max, row.Ingested_min, row.tags.Firmware) == (
        21.5, 2.0, 3.0, 4.0, "1.0")


def test_the_contract_offers_exactly_the_statistics_the_aggregation_computes():
    from streamdash.config import STATISTIC_NAMES
    from streamdash.transforms.aggregate import STATISTICS

    assert tuple(statistic.name for statistic in STATISTICS) == STATISTIC_NAMES
