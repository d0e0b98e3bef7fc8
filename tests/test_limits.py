"""Limits per device: the table as read (one line for a bad row), each device window judged against the most
specific limits for it, and the table read again while the job runs."""

from __future__ import annotations

import logging
import signal
import time
from functools import partial

import pytest

from streamdash.config import Contract, Limits
from streamdash.errors import StreamdashError
from streamdash.limits import LiveLimits, limit_lines, parse_limits
from streamdash_toolbox.testing.pipeline import (
    STALL_S,
    Job,
    checkpoint_progress,
    job_args,
    simulate,
    wait_for,
)

CONTRACT = Contract()
HEADER = "scope,key,measurement,warn_low,warn_high,crit_low,crit_high"


def row(device="d1", device_type="pump", site="s1", level="device", **stats) -> dict:
    return {"level": level, "device_id": device, "device_type": device_type, "site": site, "window": "20s",
            "window_start_ns": 1_796_000_000_000_000_000, **stats}


def limits(*rows: str) -> dict:
    columns = HEADER.split(",")
    return parse_limits([dict(zip(columns, text.split(","), strict=True)) for text in rows], CONTRACT)


def judged(table: dict, **kwargs) -> dict[str, tuple[int, float | None]]:
    """{measurement: (level, limit)} of the lines written for one window."""
    found = {}
    for text in limit_lines(CONTRACT, "mean", table, row(**kwargs)):
        tags, fields, _ = text.split(" ")
        values = dict(field.split("=") for field in fields.split(","))
        measurement = dict(tag.split("=") for tag in tags.split(",")[1:])["measurement"]
        found[measurement] = (int(values["level"].rstrip("i")), float(values["limit"]) if "limit" in values else None)
    return found


def test_the_most_specific_limits_judge_each_measurement_apart():
    table = limits("fleet,,temperature,,30,,40", "site,s1,temperature,,25,,35", "device_type,pump,temperature,,20,,30",
                   "device,d1,temperature,,10,,20", "fleet,,pressure,2,,1,")
    assert judged(table, temperature_mean=15.0, pressure_mean=1.5) == {"temperature": (1, 10.0),
                                                                       "pressure": (1, 2.0)}
    assert judged(table, device="d2", temperature_mean=25.0) == {"temperature": (1, 20.0)}  # its type's
    assert judged(table, device="d2", device_type="fan", temperature_mean=36.0) == {"temperature": (2, 35.0)}
    assert judged(table, device="d2", device_type="fan", site="s2", temperature_mean=36.0) == {"temperature": (1, 30.0)}
    assert judged(table, temperature_mean=5.0, pressure_mean=0.5) == {"temperature": (0, None), "pressure": (2, 1.0)}
    # No limits at any scope (humidity), no value (pressure), a site window: nothing judged.
    assert judged(table, temperature_mean=5.0, humidity_mean=99.0, pressure_mean=None) == {"temperature": (0, None)}
    assert judged(table, level="site", device=None, temperature_mean=99.0) == {}


def test_a_bound_past_both_levels_is_crit_and_an_empty_bound_is_not_checked():
    table = limits("device,d1,temperature,0,10,-5,15")
    assert [judged(table, temperature_mean=v)["temperature"] for v in (-6.0, -1.0, 0.0, 10.0, 11.0, 16.0)] == [
        (2, -5.0), (1, 0.0), (0, None), (0, None), (1, 10.0), (2, 15.0)]
    assert judged(limits("device,d1,temperature,,,,"), temperature_mean=1e300) == {"temperature": (0, None)}


@pytest.mark.parametrize(("text", "message"), [
    ("room,r1,temperature,,1,,2", "limits row 1 (scope=room, key=r1, measurement=temperature, warn_high=1, "
                                  "crit_high=2): scope must be one of device, device_type, site, fleet"),
    ("device,,temperature,,1,,2", "key names the device"),
    ("fleet,x,temperature,,1,,2", "key names the fleet"),
    ("device,d1,co2,,1,,2", "'co2' is not a measurement of the contract"),
    ("device,d1,temperature,,high,,2", "each bound is a number or empty"),
    ("device,d1,temperature,,inf,,2", "each bound is a finite number or empty"),
])
def test_a_bad_row_is_refused_in_one_line_that_names_it(text, message):
    with pytest.raises(StreamdashError) as error:
        limits(text)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_same_limits_twice_are_refused():
    with pytest.raises(StreamdashError, match="limits row 2 .*the device d1 has limits for temperature twice"):
        limits("device,d1,temperature,,1,,2", "device,d1,temperature,,3,,4")


def test_the_job_reads_the_table_again_and_keeps_the_last_good_one(spark, tmp_path, caplog):
    path = tmp_path / "limits.csv"
    path.write_text(f"{HEADER}\ndevice,d1,temperature,,10,,20\n")
    live = LiveLimits(spark, Limits(path=str(path), reread_every="0 seconds"), CONTRACT)
    assert live.lines()(row(temperature_mean=15.0))[0].count("level=1i") == 1
    path.write_text(f"{HEADER}\ndevice,d1,temperature,,30,,40\n")
    assert "level=0i" in live.lines()(row(temperature_mean=15.0))[0]
    path.write_text(f"{HEADER}\ndevice,d1,temperature,,x,,40\n")
    with caplog.at_level(logging.ERROR, logger="streamdash.limits"):
        assert "level=0i" in live.lines()(row(temperature_mean=15.0))[0]
    assert "each bound is a number or empty; the limits read before stay in force" in caplog.text
    with pytest.raises(StreamdashError, match="each bound is a number or empty"):
        LiveLimits(spark, Limits(path=str(path)), CONTRACT)  # at start, a bad table stops the job
    with pytest.raises(StreamdashError, match="cannot be read"):
        LiveLimits(spark, Limits(path=str(tmp_path / "missing.csv")), CONTRACT)


def test_a_limit_changed_while_the_job_runs_takes_effect_and_a_measurement_without_limits_is_not_judged(
        stack, stack_env, influx, topic, database, tmp_path):
    """dev-0001's temperature is crit by a limit of its own, every other device's is ok by the fleet's; the job
    runs, dev-0001's limit is removed, and from `limits.reread_every` later its windows are judged by the fleet's.
    Humidity has no limits: it is never judged."""
    path = tmp_path / "limits.csv"
    path.write_text(f"{HEADER}\nfleet,,temperature,,1000000,,\ndevice,dev-0001,temperature,,,,-1000\n")
    args = job_args(stack, topic, database, tmp_path, f"limits.path={path}", "limits.reread_every=2 seconds")
    moved = partial(checkpoint_progress, tmp_path)
    points = "SELECT * FROM telemetry_limits WHERE \"device\" = 'dev-0001'"

    def states() -> dict[int, tuple[str, int]]:
        """dev-0001's 5 s windows: start ns -> (state, level)."""
        return {r["time"]: (r["state"], r["level"]) for r in influx.query(points, database) if r["window"] == "5s"}

    sender = simulate(["--bootstrap", stack.info["kafka"]["bootstrap_servers"]], topic, tmp_path / "manifest.jsonl",
                      stack_env, extra=("--duration", "900", "--late-beyond-rate", "0"))
    job = Job(args, stack_env, tmp_path / "job.log")
    try:
        job.wait_started()
        assert wait_for(lambda: len(states()) >= 4, STALL_S, progress=moved)
        before = states()  # judged by batches before the change (a window's time is its events', not its batch's)
        changed_ns = time.time_ns()
        staged = tmp_path / "limits.csv.new"  # replaced whole, as an operator's tool should
        staged.write_text(f"{HEADER}\nfleet,,temperature,,1000000,,\n")
        staged.replace(path)
        after_ns = changed_ns + 2_000_000_000
        assert wait_for(lambda: sum(start >= after_ns for start in states()) >= 3, STALL_S, progress=moved)
    finally:
        sender.send_signal(signal.SIGTERM)
        assert sender.wait(timeout=120) == 0
        job.cleanup()
    judged_after = [state for start, state in states().items() if start >= after_ns]
    assert set(before.values()) == {("crit", 2)}
    assert judged_after and set(judged_after) == {("ok", 0)}
    others = influx.query("SELECT max(\"level\") FROM telemetry_limits WHERE \"device\" != 'dev-0001' "
                          "GROUP BY \"measurement\"", database)
    assert {(r["measurement"], r["max"]) for r in others} == {("temperature", 0)}  # no humidity, no warn
