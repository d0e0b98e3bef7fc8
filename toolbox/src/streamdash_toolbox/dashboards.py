"""Check the dashboards in `dashboards/` against a real InfluxDB: every InfluxQL panel query, with Grafana's (or
Chronograf's) macros and template variables expanded the way they expand them, must return data. Grafana:
`$timeFilter` -> `time >= <from>ms and time <= <to>ms`, `$__interval` / `$interval` -> the group-by interval, `$var`
/ `${var}` / `[[var]]` -> the variable's value; inside a regex (`/^$site$/`) a multi-value variable becomes `(a|b)`
with each value regex-escaped. Template variables are resolved by running their own queries (and applying their
`regex`, as Grafana does: how the dashboards list the contract's measurements from `SHOW FIELD KEYS`), so those are
checked too. A repeated panel is checked for the variable's first value. Expression targets (`__expr__`) must refer
to query targets of the same panel; Grafana Live targets must name a channel the job pushes to.
Chronograf: `:dashboardTime:` -> `now() - <range>`, `:upperDashboardTime:` -> `now()`, `:interval:`, and
template variables `:name:` -> their values, quoted as Chronograf quotes each type (a tag value or timestamp in
single quotes, a field key, tag key, measurement or database in double quotes; `ui/src/tempVars/utils/replace.ts`);
a variable with a meta query takes its selected value where the query still lists it, else the query's first value,
and is left unreplaced when the query lists none, as Chronograf does when a dashboard loads
(`ui/src/tempVars/utils/index.ts`), so a fleet without the exported selection still gets a panel of its own fields.

Grafana's own model: `model_problems` decodes a dashboard with grafana-foundation-sdk (generated from Grafana's
schema) and reports what does not survive a decode/encode round trip: an unknown or misplaced field, a value of
the wrong shape, a panel that cannot be decoded. Alert rules (`provisioning/alerting/*.yml`) are checked the same
way against the SDK's rule model, and evaluated: query A on InfluxDB over the rule's relative time range, then
its reduce and threshold expressions as Grafana's server-side expressions compute them.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.alerting import Rule
from grafana_foundation_sdk.models.dashboard import Dashboard

from streamdash import influxql
from streamdash.sinks.points import LIMITS_MEASUREMENT

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
    skipped: str = ""  # why a panel of a feature the job was not configured with has no data (`OPTIONAL`)

    @property
    def ok(self) -> bool:
        return not self.problem and (self.values > 0 or bool(self.skipped))


# Measurements the job writes only when a feature is configured: a panel over one that the database does not hold
# is skipped with this reason instead of failed.
OPTIONAL = {LIMITS_MEASUREMENT: "no limits judged in this database (the job's `limits` is not set)"}


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


def time_filter(start_ms: int, end_ms: int) -> str:
    """Grafana's `$timeFilter` for InfluxQL."""
    return f"time >= {start_ms}ms and time <= {end_ms}ms"


def expand_grafana(statement: str, variables: dict[str, list[str]], window: Window) -> str:
    builtins = {"timeFilter": time_filter(window.now_ms - window.minutes * 60_000, window.now_ms),
                "__interval": window.interval, "interval": window.interval,
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


def apply_variable_regex(values: list[str], regex: str) -> list[str]:
    """A query variable's `regex` as Grafana applies it: values that do not match are dropped; a capture group
    (the named group `value`, else the first) replaces the value; repeats are kept once, in order."""
    pattern = re.compile(regex[1:regex.rindex("/")] if regex.startswith("/") else regex)
    kept: list[str] = []
    for value in values:
        match = pattern.search(value)
        if not match:
            continue
        groups = match.groupdict()
        text = groups.get("value") or (match.group(1) if match.groups() else value)
        if text not in kept:
            kept.append(text)
    return kept


def resolve_grafana_variables(dashboard: dict, query: Any, window: Window) -> dict[str, list[str]]:
    """Each query variable's values from its own query (in order, so later ones may use earlier ones);
    multi-value and include-all variables take every value, others the first."""
    variables: dict[str, list[str]] = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "custom":
            variables[variable["name"]] = [v.strip() for v in variable["query"].split(",") if v.strip()]
            continue
        statement = expand_grafana(variable["query"], variables, window)
        # SHOW TAG VALUES answers `value`, SHOW FIELD KEYS `fieldKey`.
        values = [row["value"] if "value" in row else row["fieldKey"] for row in query(statement)]
        if variable.get("regex"):
            values = apply_variable_regex(values, variable["regex"])
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
                if not check.values and not check.problem:
                    check.skipped = next((why for name, why in OPTIONAL.items() if f'"{name}"' in check.statement
                                          and not query(f'SHOW MEASUREMENTS WITH MEASUREMENT = "{name}"')), "")
            checks.append(check)
    return checks


def _uid(target: dict, panel: dict) -> str:
    return (target.get("datasource") or panel.get("datasource") or {}).get("uid", "")


# How Chronograf writes a template value of each type into a query, and which column of its meta query lists them.
_CHRONOGRAF_QUOTES = {"tagValue": "'", "timeStamp": "'", "fieldKey": '"', "tagKey": '"', "measurement": '"',
                      "database": '"'}
_CHRONOGRAF_META_COLUMNS = {"tagValues": "value", "fieldKeys": "fieldKey", "tagKeys": "tagKey",
                            "measurements": "name", "databases": "name"}


def expand_chronograf(statement: str, variables: dict[str, tuple[str, str]], window: Window) -> str:
    """`variables`: name -> (value, its Chronograf value type)."""
    expanded = (statement.replace(":dashboardTime:", f"now() - {window.minutes}m")
                .replace(":upperDashboardTime:", "now()").replace(":interval:", window.interval))
    for name, (value, value_type) in variables.items():
        quote = _CHRONOGRAF_QUOTES.get(value_type, "")
        expanded = expanded.replace(f":{name}:", f"{quote}{value}{quote}")
    return expanded


def chronograf_variables(templates: list[dict], query: Any, database: str) -> dict[str, tuple[str, str]]:
    """Each template variable's value as Chronograf picks it when the dashboard loads: the exported selection where
    the variable's meta query (run on `database`) still lists it, else the first value listed; none where the
    query lists nothing."""
    variables = {}
    for template in templates:
        [(value, value_type)] = [(v["value"], v["type"]) for v in template["values"] if v.get("selected")]
        meta = template.get("query") or {}
        column = _CHRONOGRAF_META_COLUMNS.get(template["type"])
        if meta.get("influxql") and column:
            statement = expand_chronograf(meta["influxql"], {
                "database": (database, "database"), "measurement": (meta.get("measurement", ""), "measurement"),
                "tagKey": (meta.get("tagKey", ""), "tagKey")}, Window())
            listed = [row[column] for row in query(statement)]
            if not listed:
                continue
            value = value if value in listed else listed[0]
        variables[template["tempVar"].strip(":")] = (value, value_type)
    return variables


def check_chronograf(path: Path, query: Any, window: Window, database: str) -> list[QueryCheck]:
    """Run every cell query of an exported Chronograf dashboard, its database renamed to `database`."""
    exported = load(path)["dashboard"]
    variables = chronograf_variables(exported.get("templates", []), query, database)
    checks = []
    unquoted = {name: (value, "") for name, (value, _) in variables.items()}  # a cell title shows values as they are
    for cell in exported["cells"]:
        title = expand_chronograf(cell["name"], unquoted, window)
        for number, cell_query in enumerate(cell["queries"]):
            statement = expand_chronograf(cell_query["query"], variables, window)
            statement = statement.replace('"streamdash"."autogen"', f'"{database}"."autogen"')
            check = QueryCheck(exported["name"], title, str(number), statement)
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


# ---- Grafana's model ------------------------------------------------------------------------------------------
register_default_plugins()  # the SDK decodes panel options and queries by their plugin type
ALERT_GROUP_FIELDS = {"orgId", "name", "folder", "interval", "rules"}  # Grafana's file provisioning format


def _shape(value: Any) -> str:
    return {dict: "an object", list: "a list"}.get(type(value), f"a {type(value).__name__}")


def _round_trip_losses(original: Any, encoded: Any, path: str) -> list[str]:
    if isinstance(original, dict | list) and type(encoded) is not type(original):
        return [f"{path}: the wrong shape (Grafana's model holds {_shape(encoded)} here)"]
    if isinstance(original, dict):
        return [problem for key, value in original.items()
                for problem in (_round_trip_losses(value, encoded[key], f"{path}.{key}") if key in encoded
                                else [f"{path}.{key}: not a field of Grafana's model here"])]
    if isinstance(original, list):
        if len(original) != len(encoded):
            return [f"{path}: {len(original)} items became {len(encoded)}"]
        return [problem for number, (a, b) in enumerate(zip(original, encoded, strict=True))
                for problem in _round_trip_losses(a, b, f"{path}[{number}]")]
    return [] if original == encoded else [f"{path}: {original!r} is not a valid value here"]


def _model_losses(decode: Callable[[dict], Any], document: dict, where: str) -> list[str]:
    try:
        encoded = json.loads(json.dumps(decode(document), cls=JSONEncoder))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        return [f"{where}: Grafana's model cannot decode it ({type(err).__name__}: {err})"]
    return _round_trip_losses(document, encoded, where)


def model_problems(dashboard: dict) -> list[str]:
    """Where a dashboard departs from Grafana's dashboard model. Live targets (Grafana's built-in datasource,
    which the SDK does not model) are left out of the comparison; `check_grafana` checks their channels."""
    comparable = json.loads(json.dumps(dashboard))
    for panel in grafana_panels(comparable):
        if isinstance(panel.get("targets"), list):
            panel["targets"] = [t for t in panel["targets"] if _uid(t, panel) not in LIVE_UIDS]
    title = dashboard.get("title", "dashboard")
    problems = _model_losses(Dashboard.from_json, comparable, title)
    if problems and "cannot decode" in problems[0]:  # name the panels that break the decoding
        located = [problem for number, panel in enumerate(comparable.get("panels", []))
                   for problem in _model_losses(lambda p: Dashboard.from_json({"panels": [p]}), panel,
                                                f"{title}: .panels[{number}]") if "cannot decode" in problem]
        return located or problems
    return problems


# ---- alert rules ------------------------------------------------------------------------------------------------
REDUCERS: dict[str, Callable[[list[float]], float]] = {
    "last": lambda values: values[-1], "mean": statistics.fmean, "max": max, "min": min, "sum": math.fsum,
    "count": len}
EVALUATORS: dict[str, Callable[[float, list[float]], bool]] = {
    "gt": lambda value, params: value > params[0], "lt": lambda value, params: value < params[0],
    "within_range": lambda value, params: params[0] < value < params[1],
    "outside_range": lambda value, params: not params[0] <= value <= params[1]}


@dataclass
class RuleCheck:
    rule: str
    statement: str = ""
    reduced: dict[tuple, float] = field(default_factory=dict)  # series labels -> the value its threshold judges
    firing: dict[tuple, bool] = field(default_factory=dict)
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem and bool(self.reduced)


def load_alert_rules(path: Path) -> list[dict]:
    """The rules of a provisioning file, each checked against Grafana's rule model (problems raise ValueError)."""
    document = yaml.safe_load(path.read_text())
    problems, rules = [], []
    for group in document.get("groups", []):
        problems += [f"{path.name}: group field {key!r} is not one Grafana provisions"
                     for key in set(group) - ALERT_GROUP_FIELDS]
        for rule in group.get("rules", []):
            problems += _model_losses(Rule.from_json, rule, f"{path.name}: {rule.get('title', '?')}")
            rules.append(rule)
    if problems or not rules:
        raise ValueError("; ".join(problems) or f"{path.name}: no alert rules")
    return rules


def _series(rows: list[dict]) -> dict[tuple, list[float]]:
    """InfluxQL rows -> each series' numeric values in time order, keyed by its tags."""
    found: dict[tuple, list[float]] = {}
    for row in rows:
        labels = tuple(sorted((k, v) for k, v in row.items() if k != "time" and isinstance(v, str)))
        values = [v for k, v in row.items() if k != "time" and isinstance(v, int | float) and not isinstance(v, bool)]
        found.setdefault(labels, []).extend(values[:1] or [math.nan])
    return found


def evaluate_rule(rule: dict, query: Any, now_ms: int) -> RuleCheck:
    """Run the rule's InfluxQL query over its relative time range ending at `now_ms`, then its reduce and threshold
    expressions in order; `firing` is the condition's result per series. The reducer's `dropNN` mode drops the
    empty (null/NaN) points, as Grafana's does."""
    check = RuleCheck(rule["title"])
    results: dict[str, dict[tuple, Any]] = {}
    try:
        for step in rule["data"]:
            model = step["model"]
            if step["datasourceUid"] != EXPRESSION_UID:
                span = step["relativeTimeRange"]
                check.statement = model["query"].replace(
                    "$timeFilter", time_filter(now_ms - span["from"] * 1000, now_ms - span["to"] * 1000))
                results[step["refId"]] = _series(query(check.statement))
            elif model["type"] == "reduce":
                reduce, source = REDUCERS[model["reducer"]], results[model["expression"]]
                kept = {labels: [v for v in values if not math.isnan(v)] for labels, values in source.items()}
                results[step["refId"]] = {labels: reduce(values) for labels, values in kept.items() if values}
            elif model["type"] == "threshold":
                evaluator = model["conditions"][0]["evaluator"]
                judge = EVALUATORS[evaluator["type"]]
                results[step["refId"]] = {labels: judge(value, evaluator["params"])
                                          for labels, value in results[model["expression"]].items()}
            else:
                raise ValueError(f"expression type {model['type']!r} is not evaluated here")
        check.firing = results[rule["condition"]]
        check.reduced = next(results[step["model"]["expression"]] for step in rule["data"]
                             if step["refId"] == rule["condition"])
    except influxql.InfluxQLError as err:
        check.problem = str(err)
    except (KeyError, ValueError, IndexError) as err:
        check.problem = f"cannot evaluate the rule: {type(err).__name__}: {err}"
    return check
