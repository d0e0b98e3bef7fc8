"""Long records (`contract.readings`): one reading per record, or an array of readings, pivoted into the same wide
windows as wide records; the deduplication tells one device's readings at one time apart by their name."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from streamdash.config import Contract, Validation
from streamdash.events import Reason
from streamdash.transforms.aggregate import deduplicate, windowed_aggregates
from streamdash.transforms.parse import parse_events, valid_events
from streamdash_toolbox.testing.records import raw

T0 = "2026-11-28T12:00:00Z"
ONE_PER_RECORD = Contract.model_validate({
    "device_id": "$.device", "site": "$.site", "event_time": "$.ts", "device_type": "", "sequence": "",
    "schema_version": False, "readings": {"name": "$.sensor", "value": "$.value"},
    "measurements": {"temp": {}, "hum": {"reading": "humidity %", "booleans": True}}})
IN_AN_ARRAY = ONE_PER_RECORD.model_copy(update={"readings": ONE_PER_RECORD.readings.model_copy(
    update={"array": "$.readings", "name": "$.n", "value": "$['v']"})})


def reading(sensor, value, device="d1", site="s1", ts=T0, **more) -> str:
    return json.dumps({"device": device, "site": site, "ts": ts, "sensor": sensor, "value": value, **more})


def readings(*pairs, device="d1", site="s1", ts=T0) -> str:
    return json.dumps({"device": device, "site": site, "ts": ts,
                       "readings": [{"n": name, "v": value} for name, value in pairs]})


def windows(spark, contract: Contract, *payloads: str) -> dict:
    events = deduplicate(valid_events(parse_events(raw(spark, *payloads), Validation(), contract)), "30 seconds",
                         contract.deduplication_key())
    rows = windowed_aggregates(events, ["10 seconds"], contract=contract).collect()
    return {(row.level, row.device_id): row for row in rows}


def test_one_reading_per_record_pivots_into_wide_windows_with_the_name_in_the_deduplication_key(spark):
    """A device's temperature and humidity at one time are two events, not a duplicate; a re-delivery is one."""
    payloads = [reading("temp", 20.0), reading("humidity %", 40), reading("temp", 20.0),  # the last a re-delivery
                reading("temp", 22.0, device="d2"), reading("humidity %", True, device="d2")]
    rows = windows(spark, ONE_PER_RECORD, *payloads)
    d1, d2, site = rows[("device", "d1")], rows[("device", "d2")], rows[("site", None)]
    assert (d1["count"], d1.temp_mean, d1.hum_mean) == (2, 20.0, 40.0)
    assert (d2["count"], d2.temp_mean, d2.hum_mean) == (2, 22.0, 1.0)  # booleans opted in: true is 1
    assert (site["count"], site.temp_mean, site.hum_mean, site.temp_max) == (4, 21.0, 20.5, 22.0)


def test_an_array_of_readings_is_one_wide_event_and_a_name_given_twice_is_its_last_reading(spark):
    rows = windows(spark, IN_AN_ARRAY, readings(("temp", 20), ("humidity %", 40)),
                   readings(("temp", 1), ("temp", 30), ts="2026-11-28T12:00:01Z"))
    d1 = rows[("device", "d1")]
    assert (d1["count"], d1.temp_mean, d1.temp_min, d1.hum_mean) == (2, 25.0, 20.0, 40.0)


@pytest.mark.parametrize(("contract", "payload", "reason"), [
    (ONE_PER_RECORD, reading("volts", 3.3), Reason.UNKNOWN_MEASUREMENT),
    (ONE_PER_RECORD, reading("Temp", 3.3), Reason.UNKNOWN_MEASUREMENT),  # names are exact
    (ONE_PER_RECORD, reading(7, 3.3), Reason.WRONG_TYPE),
    (ONE_PER_RECORD, reading("temp", "hot"), Reason.WRONG_TYPE),
    (ONE_PER_RECORD, reading("temp", None), Reason.MISSING_FIELD),
    (ONE_PER_RECORD, json.dumps({"device": "d1", "site": "s1", "ts": T0, "value": 1}), Reason.MISSING_FIELD),
    (ONE_PER_RECORD, reading("temp", 1e999).replace("Infinity", "1e999"), Reason.NON_FINITE_VALUE),
    (IN_AN_ARRAY, readings(("temp", 20), ("volts", 3.3)), Reason.UNKNOWN_MEASUREMENT),
    (IN_AN_ARRAY, readings(), Reason.MISSING_FIELD),
    (IN_AN_ARRAY, readings(("temp", None)), Reason.MISSING_FIELD),
    (IN_AN_ARRAY, json.dumps({"device": "d1", "site": "s1", "ts": T0, "readings": {"n": "temp", "v": 1}}),
     Reason.WRONG_TYPE),
    (IN_AN_ARRAY, readings(("temp", 20), ("humidity %", "wet")), Reason.WRONG_TYPE),
])
def test_bad_long_records_get_one_reason(spark, contract, payload, reason):
    for typed_first in (True, False):
        [row] = parse_events(raw(spark, payload), Validation(), contract, typed_first=typed_first).collect()
        assert row.error == reason, typed_first


def test_readings_no_measurement_names_can_be_ignored_and_are_counted(spark, tmp_path):
    """`unknown = "ignore"`: an unknown reading is left out of its record, a record of nothing else is left out, and
    each is counted in the query's progress (`ignored_readings`); nothing else changes."""
    payloads = [readings(("temp", 20), ("volts", 3.3), ("amps", 1)), readings(("volts", 3.3)),
                readings(("temp", "hot"), ("volts", 1)), readings(("temp", 21))]
    contract = IN_AN_ARRAY.model_copy(update={"readings": IN_AN_ARRAY.readings.model_copy(
        update={"unknown": "ignore"})})
    raw(spark, *payloads).write.parquet(str(tmp_path / "records"))
    stream = spark.readStream.schema(raw(spark, "{}").schema).parquet(str(tmp_path / "records"))
    rows = {}
    query = (parse_events(stream, Validation(), contract).writeStream.trigger(availableNow=True)
             .foreachBatch(lambda batch, _: rows.update({r.offset: (r.error, r.temp) for r in batch.collect()}))
             .start())
    query.awaitTermination()
    assert rows == {0: (None, 20.0), 2: (Reason.WRONG_TYPE, None), 3: (None, 21.0)}
    assert query.lastProgress["observedMetrics"]["ignored_readings"]["ignored_readings"] == 3  # a wrong_type's not


@pytest.mark.parametrize(("contract", "message"), [
    ({"measurements": {"temp": {}}}, "measurements.temp: needs a path"),
    ({"readings": {}, "measurements": {"temp": {"path": "$.t"}}}, "a path and contract.readings exclude"),
    ({"measurements": {"temp": {"path": "$.t", "reading": "t"}}}, "set contract.readings too"),
    ({"readings": {}, "measurements": {"temp": {}, "t2": {"reading": "temp"}}}, "the same reading name"),
    ({"readings": {"name": "$.deviceId"}, "measurements": {"temp": {}}}, None),  # one path for two roles: allowed
    ({"readings": {"name": "$.Site"}, "measurements": {"temp": {}}}, "differ only in case"),
    ({"readings": {"array": "header:x"}, "measurements": {"temp": {}}}, "not a JSON path"),
])
def test_a_long_record_contract_is_checked_with_one_line_naming_the_field(contract, message):
    if message is None:
        Contract.model_validate(contract)
        return
    with pytest.raises(ValidationError, match=message):
        Contract.model_validate(contract)
