"""Check the dashboards in `dashboards/` against a real InfluxDB: every InfluxQL panel query, with Grafana's
(or Chronograf's) macros and template variables expanded the way they expand them, must return data.

Grafana: `$timeFilter` -> `time >= <from>ms and time <= <to>ms`, `$__interval` / `$interval` -> the group-by
interval, `$var` / `${var}` / `[[var]]` -> the variable's value; inside a regex (`/^$site$/`) a multi-value
variable becomes `(a|b)` with each value regex-escaped. Template variables are resolved by running their own
queries, so those are checked too. Expression targets (`__expr__`) must refer to query targets of the same
panel; Grafana Live targets must name a channel the job pushes to.
Chronograf: `:dashboardTime:` -> `now() - <range>`, `:upperDashboardTime:` -> `now()`, `:interval:`, and
template variables `:name:` -> their values, single-quoted.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamdash import influxql

GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
REGEX_LITERAL = re.compile(r"/\^?([^/]*?)\$?/")
EXPRESSION_UID = "__expr__"
LIVE_UIDS = ("grafana", "-- Grafana --")


@dataclass
class QueryCheck:
    dashboard: str
    panel: str
    ref_id: str
    statement: str
    values: int = 0
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem and self.values > 0


@dataclass
class Window:
    """The dashboard time range: `minutes` back from now, grouped by `interval`."""

    minutes: int = 30
    interval: str = "10s"
    now_ms: int = field(default_factory=lambda: int(time.time() * 1000))


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def grafana_panels(dashboard: dict) -> list[dict]:
    """Every panel, including those inside collapsed rows."""
    panels = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return [panel for panel in panels if panel.get("type") != "row"]


def _format_value(values: list[str], in_regex: bool) -> str:
    if in_regex:
        escaped = [re.escape(value) for value in values]
        return escaped[0] if len(escaped) == 1 else f"({'|'.join(escaped)})"
    return values[0] if values else ""


def expand_grafana(statement: str, variables: dict[str, list[str]], window: Window) -> str:
    time_filter = f"time >= {window.now_ms - window.minutes * 60_000}ms and time <= {window.now_ms}ms"
    builtins = {"timeFilter": time_filter, "__interval": window.interval, "interval": window.interval,
                "__interval_ms": str(_interval_ms(window.interval))}
    regex_spans = [match.span() for match in REGEX_LITERAL.finditer(statement)]

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in builtins:
            return builtins[name]
        if name not in variables:
            return match.group(0)
        in_regex = any(start <= match.start() < end for start, end in regex_spans)
        return _format_value(variables[name], in_regex)

    return GRAFANA_VARIABLE.sub(replace, statement)


def _interval_ms(interval: str) -> int:
    number, unit = int(interval[:-1]), interval[-1]
    return number * {"s": 1000, "m": 60_000, "h": 3_600_000}[unit]


def resolve_grafana_variables(dashboard: dict, query: Any, window: Window) -> dict[str, list[str]]:
    """Each query variable's values from its own query (in order, so later ones may use earlier ones);
    multi-value and include-all variables take every value, others the first."""
    variables: dict[str, list[str]] = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "custom":
            variables[variable["name"]] = [v.strip() for v in variable["query"].split(",") if v.strip()]
            continue
        statement = expand_grafana(variable["query"], variables, window)
        values = [row["value"] for row in query(statement)]
        if not values:
            raise ValueError(f"variable {variable['name']!r}: {statement!r} returned no values")
        variables[variable["name"]] = values if variable.get("multi") or variable.get("includeAll") else values[:1]
    return variables


def check_grafana(path: Path, query: Any, window: Window, live_channels: list[str]) -> list[QueryCheck]:
    """Run every InfluxQL target of a Grafana dashboard; `query(statement)` returns InfluxQL rows."""
    dashboard = load(path)
    try:
        variables = resolve_grafana_variables(dashboard, query, window)
    except (ValueError, influxql.InfluxQLError) as err:
        return [QueryCheck(dashboard["title"], "template variables", "-", "", problem=str(err))]
    checks = []
    for panel in grafana_panels(dashboard):
        targets = panel.get("targets", [])
        query_refs = {t["refId"] for t in targets if _uid(t, panel) not in (EXPRESSION_UID, *LIVE_UIDS)}
        for target in targets:
            uid = _uid(target, panel)
            check = QueryCheck(dashboard["title"], panel["title"], target["refId"], "")
            if uid == EXPRESSION_UID:
                check.statement = target.get("expression", "")
                missing = set(re.findall(r"\$(\w+)", check.statement)) - query_refs
                check.values = 1 if check.statement and not missing else 0
                check.problem = f"refers to missing targets {sorted(missing)}" if missing else ""
            elif uid in LIVE_UIDS:
                check.statement = target.get("channel", "")
                check.values = 1
                if check.statement not in live_channels:
                    check.problem = f"channel {check.statement!r} is not one the job pushes ({live_channels})"
            else:
                check.statement = expand_grafana(target["query"], variables, window)
                _run(check, query)
            checks.append(check)
    return checks


def _uid(target: dict, panel: dict) -> str:
    return (target.get("datasource") or panel.get("datasource") or {}).get("uid", "")


def expand_chronograf(statement: str, variables: dict[str, str], window: Window) -> str:
    expanded = (statement.replace(":dashboardTime:", f"now() - {window.minutes}m")
                .replace(":upperDashboardTime:", "now()").replace(":interval:", window.interval))
    for name, value in variables.items():
        expanded = expanded.replace(f":{name}:", f"'{value}'")
    return expanded


def check_chronograf(path: Path, query: Any, window: Window, database: str) -> list[QueryCheck]:
    """Run every cell query of an exported Chronograf dashboard, its database renamed to `database`."""
    exported = load(path)["dashboard"]
    variables = {}
    for template in exported.get("templates", []):
        selected = [v["value"] for v in template["values"] if v.get("selected")]
        variables[template["tempVar"].strip(":")] = selected[0]
    checks = []
    for cell in exported["cells"]:
        for number, cell_query in enumerate(cell["queries"]):
            statement = expand_chronograf(cell_query["query"], variables, window)
            statement = statement.replace('"streamdash"."autogen"', f'"{database}"."autogen"')
            check = QueryCheck(exported["name"], cell["name"], str(number), statement)
            _run(check, query)
            checks.append(check)
    return checks


def _run(check: QueryCheck, query: Any) -> None:
    try:
        rows = query(check.statement)
    except influxql.InfluxQLError as err:
        check.problem = str(err)
        return
    check.values = sum(1 for row in rows for key, value in row.items()
                       if key != "time" and isinstance(value, int | float) and not isinstance(value, bool))


def influx_query(url: str, token: str, database: str):
    """A `query(statement)` function for the checks above."""
    return lambda statement: influxql.rows(influxql.query(url, statement, token, database))
