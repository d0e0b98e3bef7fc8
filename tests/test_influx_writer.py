"""The InfluxDB writer's retry rules, against a real HTTP server that answers with faults, then the real InfluxDB.

The fault server speaks plain HTTP on loopback and records each request, so the tests see what reached it.
"""

from __future__ import annotations

import pytest

from streamdash.sinks.influxdb import InfluxWriteError, InfluxWriter

TOKEN = "streamdash:do-not-print-me"


def writer(url: str, **overrides) -> InfluxWriter:
    return InfluxWriter(url=url, org="o", bucket="db/rp", token=TOKEN, **{
        "retry_initial_delay_s": 0.05, "retry_max_delay_s": 5.0, "max_retries": 3, **overrides})


def test_retry_after_is_honoured_on_429_and_503(fault_server):
    server = fault_server([(429, {"Retry-After": "1"}), (503, {"Retry-After": "1"})])
    assert writer(server.url).write_lines(["m v=1i 1"]) == 1
    at = [r["at"] for r in server.requests]
    assert len(at) == 3
    assert at[1] - at[0] >= 0.95 and at[2] - at[1] >= 0.95
    assert all(r["body"] == "m v=1i 1" for r in server.requests)
    assert server.requests[0]["auth"] == f"Token {TOKEN}"


def test_a_bad_request_fails_at_once_without_the_token(fault_server):
    server = fault_server([(400, {})])
    with pytest.raises(InfluxWriteError) as error:
        writer(server.url).write_lines(["m v=1i 1"])
    assert len(server.requests) == 1
    assert "400" in str(error.value) and "bad line" in str(error.value)
    assert "do-not-print-me" not in str(error.value) and "do-not-print-me" not in repr(writer(server.url))


def test_server_errors_back_off_then_give_up(fault_server):
    server = fault_server([(500, {})] * 10)
    with pytest.raises(InfluxWriteError, match="after 4 attempts"):
        writer(server.url).write_lines(["m v=1i 1"])
    assert len(server.requests) == 4


def test_an_unreachable_server_gives_up_after_bounded_retries(fault_server):
    server = fault_server([])
    url = server.url
    server.close()
    server.httpd.server_close()
    with pytest.raises(InfluxWriteError, match="after 3 attempts"):
        writer(url, max_retries=2, timeout_s=2).write_lines(["m v=1i 1"])


def test_lines_go_in_batches_and_none_lines_are_skipped(fault_server):
    server = fault_server([])
    lines = [f"m v={i}i {i}" for i in range(7)] + [None]
    assert writer(server.url, batch_size=3).write_lines(lines) == 7
    assert [r["body"].count("\n") + 1 for r in server.requests] == [3, 3, 1]


def test_writes_land_in_the_real_influxdb(influx):
    database = influx.create_database("writer")
    real = InfluxWriter(url=influx.url, org="streamdash", bucket=f"{database}/autogen", token=influx.token,
                        batch_size=1000)
    lines = [f"w,k=a v={i}i {i * 1_000_000_000}" for i in range(2500)]
    assert real.write_lines(lines) == 2500
    assert real.write_lines(lines) == 2500  # a replay overwrites: same points, no duplicates
    assert influx.query("SELECT count(v) FROM w", database)[0]["count"] == 2500
