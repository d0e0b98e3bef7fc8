"""The InfluxDB writer against a real HTTP server that answers with faults, then against the real InfluxDB:
an outage is waited out (up to `max_outage`), refused points are isolated and handed back, nothing else is lost.

The fault server speaks plain HTTP on loopback and records each request, so the tests see what reached it.
"""

from __future__ import annotations

import logging
import time

import pytest

from streamdash.sinks.influxdb import InfluxWriteError, InfluxWriter
from streamdash.sinks.retry import RetryPolicy

TOKEN = "streamdash:do-not-print-me"


def writer(url: str, max_outage_s: float = 5.0, **overrides) -> InfluxWriter:
    return InfluxWriter(url=url, org="o", bucket="db/rp", token=TOKEN, **{
        "retry": RetryPolicy(0.05, 0.2, max_retries=None, max_outage_s=max_outage_s), **overrides})


def test_retry_after_is_honoured_on_429_and_503(fault_server):
    server = fault_server([(429, {"Retry-After": "1"}), (503, {"Retry-After": "1"})])
    report = writer(server.url, retry=RetryPolicy(0.05, 5.0, max_retries=None, max_outage_s=30)).write_lines(
        ["m v=1i 1"])
    assert report.written == 1 and report.rejected == []
    at = [r["at"] for r in server.requests]
    assert len(at) == 3
    assert at[1] - at[0] >= 0.95 and at[2] - at[1] >= 0.95
    assert report.blocked_s >= 1.9
    assert all(r["body"] == "m v=1i 1" for r in server.requests)
    assert server.requests[0]["auth"] == f"Token {TOKEN}"


@pytest.mark.parametrize("status", [401, 403, 404])
def test_wrong_credentials_or_bucket_fail_at_once_without_the_token(fault_server, status):
    server = fault_server([(status, {})])
    with pytest.raises(InfluxWriteError) as error:
        writer(server.url).write_lines(["m v=1i 1"])
    assert len(server.requests) == 1
    assert str(status) in str(error.value) and "influxdb.token" in str(error.value)
    assert "do-not-print-me" not in str(error.value) and "do-not-print-me" not in repr(writer(server.url))


def test_an_outage_is_ridden_out_and_reported(fault_server, caplog):
    server = fault_server([(500, {})] * 8 + [(503, {})] * 4)
    with caplog.at_level(logging.WARNING, logger="streamdash.sinks.influxdb"):
        report = writer(server.url, outage_log_every_s=0.5).write_lines(["m v=1i 1", "m v=2i 2"])
    assert report.written == 2 and len(server.requests) == 13
    assert report.blocked_s == pytest.approx(server.requests[-1]["at"] - server.requests[0]["at"], abs=0.1)
    outage_lines = [r.getMessage() for r in caplog.records if "unavailable for" in r.getMessage()]
    assert 1 <= len(outage_lines) < 12, "logged periodically, not once per attempt"
    assert all("do-not-print-me" not in line for line in outage_lines)


def test_past_max_outage_the_writer_fails_with_one_clear_line(fault_server):
    server = fault_server([(500, {})] * 1000)
    started = time.monotonic()
    with pytest.raises(InfluxWriteError, match=r"unavailable for \d+ s, longer than influxdb.max_outage"):
        writer(server.url, max_outage_s=1.5).write_lines(["m v=1i 1"])
    assert time.monotonic() - started >= 1.5
    assert 3 <= len(server.requests) < 1000


def test_an_unreachable_server_is_retried_until_max_outage(fault_server):
    server = fault_server([])
    url = server.url
    server.close()
    server.httpd.server_close()
    with pytest.raises(InfluxWriteError, match="Connection refused|NewConnectionError"):
        writer(url, max_outage_s=1.0, timeout_s=2).write_lines(["m v=1i 1"])


def test_a_body_too_large_is_split_and_a_line_too_large_is_rejected(fault_server):
    def respond(body: str) -> tuple[int, dict]:
        return (413, {}) if body.count("\n") >= 2 or "huge" in body else (204, {})

    server = fault_server([], respond=respond)
    lines = [f"m v={i}i {i}" for i in range(9)] + ['m huge="x" 99']
    report = writer(server.url, batch_size=100).write_lines(lines)
    assert report.written == 9
    assert [(line, "413" in why) for line, why in report.rejected] == [('m huge="x" 99', True)]
    accepted = [r["body"] for r in server.requests if r["body"].count("\n") < 2 and "huge" not in r["body"]]
    assert sorted(line for body in accepted for line in body.split("\n")) == sorted(lines[:9])


def test_lines_go_in_batches_and_none_lines_are_skipped(fault_server):
    server = fault_server([])
    lines = [f"m v={i}i {i}" for i in range(7)] + [None]
    assert writer(server.url, batch_size=3).write_lines(lines).written == 7
    assert sorted(r["body"].count("\n") + 1 for r in server.requests) == [1, 3, 3]


def test_writes_land_in_the_real_influxdb(influx):
    database = influx.create_database("writer")
    real = InfluxWriter(url=influx.url, org="streamdash", bucket=f"{database}/autogen", token=influx.token,
                        batch_size=1000)
    lines = [f"w,k=a v={i}i {i * 1_000_000_000}" for i in range(2500)]
    assert real.write_lines(lines).written == 2500
    assert real.write_lines(lines).written == 2500  # a replay overwrites: same points, no duplicates
    assert influx.query("SELECT count(v) FROM w", database)[0]["count"] == 2500


@pytest.mark.parametrize("batch_size, concurrent_writes", [(5000, 1), (40, 4)], ids=["one_body", "concurrent"])
def test_points_the_real_influxdb_refuses_are_isolated_and_the_rest_is_written(influx, batch_size,
                                                                               concurrent_writes):
    """A field-type conflict and a point beyond a short retention policy, among good points; in one body, or in
    bodies written several at once."""
    database = influx.create_database("refused")
    influx.query(f'CREATE RETENTION POLICY "short" ON "{database}" DURATION 1h REPLICATION 1')
    real = InfluxWriter(url=influx.url, org="streamdash", bucket=f"{database}/short", token=influx.token,
                        batch_size=batch_size, concurrent_writes=concurrent_writes)
    now_ns = time.time_ns()
    assert real.write_lines([f"w,k=a v=1i {now_ns}"]).written == 1  # v is an integer field from now on
    good = [f"w,k=a v={i}i {now_ns + i}" for i in range(1, 200)]
    conflict = f"w,k=a v=1.5 {now_ns + 500}"
    too_old = f"w,k=a v=7i {now_ns - 3 * 3600 * 1_000_000_000}"
    report = real.write_lines([*good[:100], conflict, *good[100:150], too_old, *good[150:]])
    assert report.written == len(good)
    rejected = dict(report.rejected)
    assert set(rejected) == {conflict, too_old}
    assert "field type conflict" in rejected[conflict]
    assert "retention" in rejected[too_old]
    assert influx.query(f'SELECT count(v) FROM "{database}"."short"."w"', database)[0]["count"] == 200


def test_a_querys_sinks_get_the_same_lines_in_order_from_the_executors(spark, influx, fault_server):
    """`sinks.lines.write_rows`: each partition's lines go to InfluxDB, then to Grafana Live; one report per sink.
    Live refusing everything costs InfluxDB nothing."""
    from streamdash.sinks.grafana_live import GrafanaLivePusher
    from streamdash.sinks.lines import write_rows

    database = influx.create_database("sinks")
    record = InfluxWriter(url=influx.url, org="streamdash", bucket=f"{database}/autogen", token=influx.token)
    rows = spark.createDataFrame([(f"s{i}", i) for i in range(40)], "site string, n long").repartition(3)

    def to_line(row: dict) -> str | None:
        return None if row["n"] == 0 else f"telemetry_site,site={row['site']} count={row['n']}i {row['n']}"

    live = fault_server([], default_status=200)
    influx_report, live_report = write_rows(rows, to_line, [record, GrafanaLivePusher(
        live.url, "t", "streamdash", ("telemetry_site",), retry=RetryPolicy(0.05, 0.1, max_retries=0))])
    assert influx_report.written == live_report.written == 39 and not influx_report.rejected
    pushed = sorted(line for request in live.requests for line in request["body"].splitlines())
    assert pushed == sorted(to_line({"site": f"s{i}", "n": i}) for i in range(1, 40))
    assert len(live.requests) == 3, "one push per partition"

    refusing = fault_server([], default_status=401)
    influx_report, live_report = write_rows(rows, to_line, [record, GrafanaLivePusher(
        refusing.url, "t", "streamdash", ("telemetry_site",))])
    assert influx_report.written == 39 and live_report.written == 0
    assert influx.query("SELECT count(\"count\") FROM telemetry_site", database)[0]["count"] == 39
