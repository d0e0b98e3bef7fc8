"""Dashboards and the live path, after a real pipeline run with the default window sizes.

Grafana itself cannot be installed here (its Go module is refused by this workplace's package policy and no
registry ships its server), so, as issue 5 allows, every panel's InfluxQL is run against the real InfluxDB
with Grafana's macros and template variables expanded as Grafana expands them (`streamdash_toolbox.dashboards`),
and Grafana Live's push endpoint is a loopback stand-in that enforces its request format and token.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import pytest
import yaml

from streamdash.config import load_settings
from streamdash.errors import ConfigError
from streamdash.sinks.grafana_live import GrafanaLivePusher
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.retry import RetryPolicy
from streamdash_toolbox import dashboards
from streamdash_toolbox.testing import REPO, ground_truth
from streamdash_toolbox.testing.http_servers import FaultServer
from streamdash_toolbox.testing.pipeline import (
    STALL_S,
    Job,
    checkpoint_progress,
    job_args,
    send_with_late_data,
    wait_for,
)

GRAFANA = REPO / "dashboards" / "grafana"
ALERT_RULES = GRAFANA / "provisioning" / "alerting" / "streamdash.yml"
CHRONOGRAF = REPO / "dashboards" / "chronograf" / "fleet_overview.json"
LIVE_TOKEN = "glsa_live-token-do-not-print"
DEFAULT_WINDOWS = {"10s": 10, "1m": 60}
LIMITED_DEVICE = "dev-0001"


@pytest.fixture(scope="module")
def dashboard_run(stack, stack_env, influx, tmp_path_factory):
    """The job with the default window sizes and Grafana Live pushes (the stand-in refuses the first push with a
    503, which must cost nothing), fed by the simulator until InfluxDB holds every event."""
    from streamdash_toolbox.stack import create_topic

    work = tmp_path_factory.mktemp("dashboards")
    topic, database = f"dash-{work.name[-8:]}", influx.create_database("dashboards")
    create_topic(stack.info["kafka"]["bootstrap_servers"], topic, partitions=3)
    live = FaultServer([(503, {"Retry-After": "0"})], default_status=200, expected_auth=f"Bearer {LIVE_TOKEN}")
    limits = work / "limits.csv"  # every device's temperature within the fleet's limits, but LIMITED_DEVICE's own
    limits.write_text("scope,key,measurement,warn_low,warn_high,crit_low,crit_high\n"
                      f"fleet,,temperature,,1000000,,\ndevice,{LIMITED_DEVICE},temperature,,,,-1000\n")
    args = job_args(stack, topic, database, work) + [
        "--set", 'aggregation.window_sizes=["10 seconds", "1 minute"]', "--set", f"grafana_live.url={live.url}",
        "--set", "grafana_live.token=${GRAFANA_LIVE_TOKEN}", "--set", f"limits.path={limits}"]
    job = Job(args, {**stack_env, "GRAFANA_LIVE_TOKEN": LIVE_TOKEN}, work / "job.log")
    try:
        job.wait_started()
        manifest = send_with_late_data(["--bootstrap", stack.info["kafka"]["bootstrap_servers"]], topic, work,
                                       stack_env, influx, database, extra=("--max-window-s", "60"))
        entries = ground_truth.manifest(manifest)
        counted = len(ground_truth.counted_events(entries))
        total = 'SELECT sum("count") FROM telemetry_site WHERE "window" = \'10s\''
        moved = partial(checkpoint_progress, work)
        assert wait_for(lambda: sum(r["sum"] for r in influx.query(total, database)) == counted, STALL_S,
                        progress=moved)
        # The query's progress, complete: the alert-rule test compares its dead-letter share.
        read = 'SELECT sum("input_rows"), sum("dead_letters") FROM pipeline_progress WHERE "stream" =~ /_aggregates$/'
        dead = sum(1 for entry in entries if entry["category"] == "malformed")
        expected = [(len(entries), dead)]
        assert wait_for(lambda: [(r["sum"], r["sum_1"]) for r in influx.query(read, database)] == expected, STALL_S,
                        progress=moved)
        assert job.terminate() == 0
    finally:
        job.cleanup()
        live.close()
    assert LIVE_TOKEN not in job.log.read_text(errors="replace")
    return {"database": database, "live": live, "entries": entries}


@pytest.fixture()
def query(influx, dashboard_run):
    return dashboards.influx_query(influx.url, influx.token, dashboard_run["database"])


def test_provisioning_points_every_panel_at_the_provisioned_datasource():
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "streamdash.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "influxdb" and source["jsonData"]["version"] == "InfluxQL"
    assert source["url"] == "${STREAMDASH_INFLUXDB_URL}" and source["jsonData"]["dbName"]
    assert source["secureJsonData"]["httpHeaderValue1"] == "Token ${INFLUXDB_TOKEN}"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "streamdash.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "${STREAMDASH_DASHBOARDS_DIR}"
    boards = sorted(GRAFANA.glob("*.json"))
    assert [b.stem for b in boards] == ["data_quality", "device_drilldown", "fleet_overview", "pipeline_health"]
    uids = set()
    for path in boards:
        board = dashboards.load(path)
        uids.add(board["uid"])
        assert board["refresh"] in ("5s", "10s"), "a real-time view refreshes every few seconds"
        for panel in dashboards.grafana_panels(board):
            for target in panel["targets"]:
                uid = (target.get("datasource") or panel["datasource"])["uid"]
                assert uid in (source["uid"], dashboards.EXPRESSION_UID, *dashboards.LIVE_UIDS), (path, panel["title"])
    assert len(uids) == len(boards)


def test_device_drilldown_has_site_device_window_and_measurement_variables():
    board = dashboards.load(GRAFANA / "device_drilldown.json")
    assert [v["name"] for v in board["templating"]["list"]] == ["window", "site", "device", "measurement"]


def test_the_measurement_variable_lists_the_contract_s_measurements_from_the_field_keys():
    """Panels follow the contract: the measurements are whatever InfluxDB has fields of, not names in the file."""
    [variable] = [v for v in dashboards.load(GRAFANA / "device_drilldown.json")["templating"]["list"]
                  if v["name"] == "measurement"]
    keys = ["count", "co2_mean", "co2_p95", "stats_overflowed", "rpm_last", "door_open_max", "co2_min"]
    assert dashboards.apply_variable_regex(keys, variable["regex"]) == ["co2", "rpm", "door_open"]
    assert not any("temperature" in json.dumps(panel) for board in ("fleet_overview", "device_drilldown")
                   for panel in dashboards.load(GRAFANA / f"{board}.json")["panels"])


@pytest.mark.parametrize("board", ["fleet_overview", "device_drilldown", "data_quality", "pipeline_health"])
def test_every_grafana_panel_query_returns_data(query, board):
    live = GrafanaLivePusher("http://grafana", "t", "streamdash", ("telemetry_site",))
    checks = dashboards.check_grafana(GRAFANA / f"{board}.json", query, dashboards.Window(), live.channels())
    assert checks
    failed = [(c.panel, c.ref_id, c.problem or "no values", c.statement) for c in checks if not c.ok]
    assert not failed, failed


def test_a_broken_panel_query_is_caught(query, tmp_path):
    """The check above can fail: a misspelt field returns no values, a bad statement an error."""
    board = dashboards.load(GRAFANA / "pipeline_health.json")
    board["panels"][1]["targets"][0]["query"] = board["panels"][1]["targets"][0]["query"].replace(
        "batch_duration_ms", "batch_duration_msec")
    board["panels"][2]["targets"][0]["query"] = "SELEC nonsense"
    (tmp_path / "broken.json").write_text(json.dumps(board))
    checks = {c.panel: c for c in dashboards.check_grafana(tmp_path / "broken.json", query, dashboards.Window(), [])}
    assert not checks["Batch duration"].ok and not checks["Batch duration"].problem
    assert "refused" in checks["Offsets behind latest"].problem


def test_macros_expand_as_grafana_expands_them():
    window = dashboards.Window(minutes=5, interval="10s", now_ms=1_700_000_000_000)
    statement = "SELECT x FROM m WHERE \"site\" =~ /^$site$/ AND \"window\" = '$window' AND $timeFilter " \
                "GROUP BY time($__interval)"
    expanded = dashboards.expand_grafana(statement, {"site": ["a.b", "c"], "window": ["10s"]}, window)
    assert expanded == ("SELECT x FROM m WHERE \"site\" =~ /^(a\\.b|c)$/ AND \"window\" = '10s' AND "
                        "time >= 1699999700000ms and time <= 1700000000000ms GROUP BY time(10s)")


def test_chronograf_fleet_overview_returns_data(query, dashboard_run):
    checks = dashboards.check_chronograf(CHRONOGRAF, query, dashboards.Window(), dashboard_run["database"])
    assert len(checks) == 4
    failed = [(c.panel, c.problem or "no values", c.statement) for c in checks if not c.ok]
    assert not failed, failed


def test_chronograf_s_statistic_follows_a_fleet_of_its_own(influx):
    """A pump fleet has no temperature: the statistic variable lists the fleet's own fields, Chronograf falls back to
    the first of them, and the cell shows it (a field key quoted as one)."""
    database = influx.create_database("pumps")
    now_ns = time.time_ns() // 10**9 * 10**9
    lines = [f"telemetry_site,site=plant-{i % 2},window=10s count={i + 1}i,tank_mean={40 + i} {now_ns - i * 10**10}"
             for i in range(6)]
    assert InfluxWriter(influx.url, "o", f"{database}/autogen", influx.token).write_lines(lines).written == 6
    query = dashboards.influx_query(influx.url, influx.token, database)
    checks = dashboards.check_chronograf(CHRONOGRAF, query, dashboards.Window(), database)
    [statistic] = [c for c in checks if c.panel.startswith("Mean of")]
    assert statistic.panel == "Mean of count by site" and 'mean("count")' in statistic.statement
    assert statistic.ok, statistic.problem
    variables = dashboards.chronograf_variables(dashboards.load(CHRONOGRAF)["dashboard"]["templates"], query,
                                                database)
    assert variables == {"window": ("10s", "tagValue"), "statistic": ("count", "fieldKey")}


def test_live_pushes_carry_the_windows_that_landed_in_influxdb(influx, dashboard_run):
    requests = dashboard_run["live"].requests
    pushes = [r for r in requests if r["auth"] == f"Bearer {LIVE_TOKEN}"]
    assert len(pushes) == len(requests) > 1
    assert {r["path"] for r in pushes} == {"/api/live/push/streamdash"}
    lines = [line for r in pushes[1:] for line in r["body"].splitlines()]  # the first was refused with a 503
    assert lines and all(line.startswith("telemetry_site,") for line in lines)
    assert pushes[0]["body"] in {r["body"] for r in pushes[1:]}, "the refused push was retried"
    # The newest push of each point equals what InfluxDB holds (update mode re-emits a window as it grows).
    pushed = {}
    for line in lines:
        series, fields, timestamp = line.rsplit(" ", 2)
        tags = dict(part.split("=", 1) for part in series.split(",")[1:])
        count = next(int(f.split("=")[1].rstrip("i")) for f in fields.split(",") if f.startswith("count="))
        pushed[(tags["site"], tags["window"], int(timestamp))] = count
    landed = {(r["site"], r["window"], r["time"]): r["count"]
              for r in influx.query('SELECT "count" FROM telemetry_site GROUP BY site, "window"',
                                    dashboard_run["database"])}
    assert set(pushed) <= set(landed)
    assert pushed == {key: landed[key] for key in pushed}
    # Every pushed line is valid line protocol: InfluxDB takes them all.
    scratch = influx.create_database("live_lines")
    assert InfluxWriter(influx.url, "o", f"{scratch}/autogen", influx.token).write_lines(lines).written == len(lines)


def test_live_channel_in_the_fleet_dashboard_is_the_one_the_job_pushes_to(monkeypatch):
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    settings = load_settings("local", REPO / "conf", ["grafana_live.url=http://127.0.0.1:3000",
                                                      "grafana_live.token=t"])
    pusher = GrafanaLivePusher.from_config(settings.grafana_live)
    board = dashboards.load(GRAFANA / "fleet_overview.json")
    channels = [t["channel"] for p in dashboards.grafana_panels(board) for t in p["targets"] if "channel" in t]
    assert channels and set(channels) <= set(pusher.channels())


def pusher(url: str, **overrides) -> GrafanaLivePusher:
    return GrafanaLivePusher(url, LIVE_TOKEN, "streamdash", ("telemetry_site",),
                             **{"retry": RetryPolicy(0.05, 1.0, max_retries=2), **overrides})


def test_live_refusal_gives_up_at_once_and_never_raises(fault_server, caplog):
    server = fault_server([], default_status=200, expected_auth="Bearer another-token")
    assert pusher(server.url).write_lines(["telemetry_site,site=a count=1i 1"]).written == 0
    assert len(server.requests) == 1, "a 401 is not retried"
    assert "HTTP 401" in caplog.text and LIVE_TOKEN not in caplog.text


def test_live_retries_server_errors_then_drops_without_raising(fault_server):
    server = fault_server([(500, {})] * 5, default_status=200)
    started = time.monotonic()
    assert pusher(server.url).write_lines(["telemetry_site,site=a count=1i 1"]).written == 0
    assert len(server.requests) == 3 and time.monotonic() - started < 5
    down = FaultServer([])
    down.close()
    assert pusher(down.url, timeout_s=1.0).write_lines(["telemetry_site,site=a count=1i 1"]).written == 0


def test_live_sends_only_its_measurements_in_chunks(fault_server):
    server = fault_server([], default_status=200)
    lines = [f"telemetry_site,site=s{i} count={i}i {i}" for i in range(5)] + ["telemetry_device,site=a count=1i 1",
                                                                             None]
    assert pusher(server.url, max_lines_per_push=2).write_lines(lines).written == 5
    assert [len(r["body"].splitlines()) for r in server.requests] == [2, 2, 1]


def test_live_configuration_is_validated(monkeypatch):
    monkeypatch.setenv("INFLUXDB_TOKEN", "u:p")
    with pytest.raises(ConfigError, match="grafana_live.token"):
        load_settings("local", REPO / "conf", ["grafana_live.url=http://127.0.0.1:3000"])
    with pytest.raises(ConfigError, match="grafana_live.stream_id"):
        load_settings("local", REPO / "conf", ["grafana_live.url=http://g", "grafana_live.token=t",
                                               "grafana_live.stream_id=a/b"])


@pytest.mark.parametrize("board", ["fleet_overview", "device_drilldown", "data_quality", "pipeline_health"])
def test_every_dashboard_fits_grafanas_own_model(board):
    assert dashboards.model_problems(dashboards.load(GRAFANA / f"{board}.json")) == []


MALFORMED_PANELS = {
    "misspelt field": (lambda panel: panel.__setitem__("fieldconfig", panel.pop("fieldConfig")),
                       ".panels[1].fieldconfig: not a field"),
    "field at the wrong level": (lambda panel: panel["fieldConfig"].__setitem__("unit", "ms"),
                                 ".panels[1].fieldConfig.unit: not a field"),
    "unknown option": (lambda panel: panel.setdefault("options", {}).__setitem__("legnd", {}),
                       ".panels[1].options.legnd: not a field"),
    "grid position as text": (lambda panel: panel.__setitem__("gridPos", "full width"),
                              ".panels[1]: Grafana's model cannot decode it"),
    "targets not a list": (lambda panel: panel.__setitem__("targets", {"A": panel["targets"][0]}),
                           ".panels[1].targets: the wrong shape (Grafana's model holds a list here)"),
    "no panel type": (lambda panel: panel.pop("type"),
                      ".panels[1]: Grafana's model cannot decode it (KeyError: 'type')"),
}


@pytest.mark.parametrize("malformation", MALFORMED_PANELS)
def test_a_malformed_panel_fails_the_model_check(malformation):
    board = dashboards.load(GRAFANA / "pipeline_health.json")
    mutate, expected = MALFORMED_PANELS[malformation]
    mutate(board["panels"][1])
    problems = dashboards.model_problems(board)
    assert len(problems) == 1 and expected in problems[0], problems


def test_alert_rules_fit_grafanas_rule_model_and_a_malformed_rule_is_refused(tmp_path):
    rules = dashboards.load_alert_rules(ALERT_RULES)
    assert [rule["uid"] for rule in rules] == ["streamdash-device-silent", "streamdash-freshness",
                                               "streamdash-dead-letter-share", "streamdash-device-limits"]
    for rule in rules:
        assert {step["datasourceUid"] for step in rule["data"]} == {"streamdash-influxdb", dashboards.EXPRESSION_UID}
    document = yaml.safe_load(ALERT_RULES.read_text())
    document["groups"][0]["rules"][1]["forr"] = document["groups"][0]["rules"][1].pop("for")
    document["groups"][0]["evaluate_every"] = "1m"
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(document))
    with pytest.raises(ValueError, match=r"group field 'evaluate_every'.*Pipeline freshness above 30 seconds\.forr"):
        dashboards.load_alert_rules(tmp_path / "broken.yml")


def test_alert_rules_evaluate_on_the_run_as_grafana_would(query, influx, dashboard_run):
    """Each rule's query on the real InfluxDB, its reduce and threshold applied: after the run every device is
    live and the dead-letter share is exactly what the simulator sent; ten minutes on, every device is silent; the
    limits rule fires for the one device past its own limit."""
    rules = {rule["uid"]: rule for rule in dashboards.load_alert_rules(ALERT_RULES)}
    entries = dashboard_run["entries"]
    last_event_ms = max(e["event"]["event_time_ms"] for e in entries if e["event"])
    devices = {(("device", e["event"]["device_id"]), ("site", e["event"]["site"])) for e in entries if e["event"]}

    silent = rules["streamdash-device-silent"]
    just_after = dashboards.evaluate_rule(silent, query, last_event_ms + 60_000)
    assert just_after.ok and set(just_after.firing) == devices and not any(just_after.firing.values())
    later = dashboards.evaluate_rule(silent, query, last_event_ms + 600_000)
    assert later.ok and set(later.firing) == devices and all(later.firing.values())

    progress_ms = max(row["time"] for row in influx.query("SELECT input_rows FROM pipeline_progress",
                                                           dashboard_run["database"])) // 1_000_000
    share = dashboards.evaluate_rule(rules["streamdash-dead-letter-share"], query, progress_ms + 1000)
    dead = sum(1 for e in entries if e["category"] == "malformed")
    ((stream, value),) = share.reduced.items()
    assert share.ok and stream[0][1].endswith("_aggregates")
    assert value == pytest.approx(dead / len(entries), rel=1e-9) and share.firing == {stream: value > 0.05}

    # One rule, each device with its own limits: only LIMITED_DEVICE's temperature is past its crit bound.
    limits = dashboards.evaluate_rule(rules["streamdash-device-limits"], query, last_event_ms + 60_000)
    assert limits.ok and limits.firing == {
        (device, ("measurement", "temperature"), site): device[1] == LIMITED_DEVICE for device, site in devices}

    freshness = dashboards.evaluate_rule(rules["streamdash-freshness"], query, progress_ms + 1000)
    assert freshness.ok and all(labels[0][1].endswith("_aggregates") for labels in freshness.reduced)
    assert freshness.firing == {labels: value > 30_000 for labels, value in freshness.reduced.items()}


def test_every_dashboard_file_is_valid_json():
    for path in [*GRAFANA.glob("*.json"), CHRONOGRAF]:
        json.loads(Path(path).read_text())


def test_dashboards_check_command_reports_each_panel(influx, dashboard_run):
    import subprocess
    import sys

    def check(database: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "streamdash_toolbox.cli", "dashboards", "check", "--influxdb-url",
                               influx.url, "--database", database, "--dir", str(REPO / "dashboards")],
                              capture_output=True, text=True, env={"INFLUXDB_TOKEN": influx.token, "PATH": ""})

    good = check(dashboard_run["database"])
    assert good.returncode == 0, good.stdout + good.stderr
    assert "panel queries returned data" in good.stdout and influx.token not in good.stdout + good.stderr
    assert "skipped:" not in good.stdout  # the run judged limits: its limits panel has data
    empty = check(influx.create_database("empty"))
    assert empty.returncode == 2 and "returned no data or failed" in empty.stderr
    # A job without `limits`: the same points but telemetry_limits; its panel is skipped and says why.
    without = influx.create_database("nolimits")
    influx.query(f'SELECT * INTO "{without}"."autogen".:MEASUREMENT FROM "{dashboard_run["database"]}"."autogen".'
                 '/^(telemetry_device|telemetry_site|pipeline_.*)$/ GROUP BY *', dashboard_run["database"])
    skipped = check(without)
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert [line for line in skipped.stdout.splitlines() if "skipped:" in line] == [
        line for line in skipped.stdout.splitlines() if "Devices out of their limits" in line]
    assert "skipped: no limits judged in this database" in skipped.stdout


def test_the_query_command_prints_what_landed(influx, dashboard_run):
    """The README's way to look at what landed: `streamdash query "<InfluxQL>"`."""
    import subprocess
    import sys

    statement = 'SELECT "count", temperature_mean FROM telemetry_site WHERE "window" = \'10s\' GROUP BY site'
    run = subprocess.run([sys.executable, "-m", "streamdash_toolbox.cli", "query", statement, "--influxdb-url",
                          influx.url, "--database", dashboard_run["database"]], capture_output=True, text=True,
                         env={"INFLUXDB_TOKEN": influx.token, "PATH": ""})
    assert run.returncode == 0, run.stderr
    header, *rows = run.stdout.splitlines()
    assert header.split() == ["time", "site", "count", "temperature_mean"]
    expected = influx.query(statement, dashboard_run["database"])
    assert len(rows) == len(expected) > 0 and rows[0].split()[2] == str(expected[0]["count"])
