"""Line protocol with hostile strings and special floats, checked by round trip through the real InfluxDB."""

from __future__ import annotations

import math
import re

import pytest

from streamdash.events import UNREPRESENTABLE_IDENTIFIER
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.line_protocol import LineProtocolError, format_field_value, line

HOSTILE = ["with space", "comma,here", "equals=sign", 'double"quote', "single'quote", "back\\slash",
           "ünïcødé ✓ 温度", "a, b=c \"d\"", "trailing space ", " leading", "=", ",", " "]


def test_fields_keep_their_types_and_skip_non_finite_values():
    assert format_field_value(3) == "3i"
    assert format_field_value(True) == "true"
    assert format_field_value(0.1) == "0.1"
    assert format_field_value(1e-300) == "1e-300"
    assert format_field_value('say "hi" \\ bye') == '"say \\"hi\\" \\\\ bye"'
    for value in (math.nan, math.inf, -math.inf, None):
        assert format_field_value(value) is None
    assert line("m", {"t": "x"}, {"a": math.nan, "b": 2.5}, 1) == "m,t=x b=2.5 1"
    assert line("m", {"t": "x"}, {"a": math.nan, "b": None}, 1) is None


def test_tags_are_sorted_and_empty_tag_values_left_out():
    assert line("m", {"z": "1", "a": "2", "e": "", "n": None}, {"v": 1}, 5) == "m,a=2,z=1 v=1i 5"


@pytest.mark.parametrize("bad", ["new\nline", "carriage\rreturn", "tab\there", "ends\\", "esc\\,aped",
                                 "esc\\ x", "esc\\=x"])
def test_unrepresentable_names_raise_instead_of_corrupting(bad):
    assert re.search(UNREPRESENTABLE_IDENTIFIER, bad), "the parser dead-letters exactly these"
    with pytest.raises(LineProtocolError):
        line("m", {"device": bad}, {"v": 1}, 1)
    with pytest.raises(LineProtocolError):
        line(bad, {}, {"v": 1}, 1)


def test_empty_measurement_and_field_key_raise():
    with pytest.raises(LineProtocolError):
        line("", {}, {"v": 1}, 1)
    with pytest.raises(LineProtocolError):
        line("m", {}, {"": 1}, 1)


def test_one_line_per_point_whatever_the_input():
    for text in HOSTILE:
        built = line(f"meas {text}", {f"k{text}": text}, {f"f{text}": text, "n": 1.5}, 7)
        assert "\n" not in built


def test_hostile_strings_round_trip_through_influxdb(influx):
    database = influx.create_database("lp")
    writer = InfluxWriter(url=influx.url, org="streamdash", bucket=f"{database}/autogen", token=influx.token)
    lines = [line("hostile", {"device": text, "site": "s"}, {"label": text, "i": index, "x": index + 0.25,
                                                           "bad": math.nan}, 1_000_000_000 * (index + 1))
             for index, text in enumerate(HOSTILE)]
    assert writer.write_lines(lines).written == len(HOSTILE)
    got = influx.query("SELECT * FROM hostile", database)
    assert [(r["device"], r["label"], r["i"], r["x"]) for r in got] == [
        (text, text, index, index + 0.25) for index, text in enumerate(HOSTILE)]
    assert all(r.get("bad") is None for r in got)
