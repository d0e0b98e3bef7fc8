"""Limits per device: each device window judged against its own limits, so that one alert rule covers a fleet in
which every pump has its own pressure limit (Grafana cannot do it in one rule from the windows alone).

The limits are a table (`limits.path`: a CSV file locally, a Delta table on Databricks) with one row per scope and
measurement:

    scope,key,measurement,warn_low,warn_high,crit_low,crit_high
    device,pump-0042,pressure,,7.5,,8.0
    device_type,pump,pressure,,6.5,,7.0
    fleet,,temperature,-10,40,-20,50

`scope` is `device`, `device_type`, `site` or `fleet` (`key` empty); a device's limits are its own, else its device
type's, else its site's, else the fleet's, for each measurement apart. A bound left empty is not checked; a
measurement with no limits at any scope is not judged, and writes nothing. Each device window's `limits.statistic`
(the mean by default) is judged: `crit` past a crit bound, else `warn` past a warn bound, else `ok`, written as a
`telemetry_limits` point (`sinks.points`) with the value and the bound it passed. The job re-reads the table every
`limits.reread_every`; a table that cannot be read then keeps the limits it had, with an error line.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import partial

from pyspark.sql import SparkSession

from streamdash.config import Contract, Limits, duration_seconds
from streamdash.errors import StreamdashError
from streamdash.sinks import delta
from streamdash.sinks.line_protocol import line
from streamdash.sinks.points import LIMITS_MEASUREMENT

log = logging.getLogger(__name__)
# Each scope and the window row's column that names it, most specific first.
SCOPES = {"device": "device_id", "device_type": "device_type", "site": "site", "fleet": None}
BOUNDS = ("warn_low", "warn_high", "crit_low", "crit_high")
STATES = ("ok", "warn", "crit")  # a point's `level` is the index


@dataclass(frozen=True)
class Bounds:
    warn_low: float | None = None
    warn_high: float | None = None
    crit_low: float | None = None
    crit_high: float | None = None

    def judge(self, value: float) -> tuple[int, float | None]:
        """The level `value` is at, and the bound it passed (None when ok)."""
        for level, low, high in ((2, self.crit_low, self.crit_high), (1, self.warn_low, self.warn_high)):
            if low is not None and value < low:
                return level, low
            if high is not None and value > high:
                return level, high
        return 0, None


LimitTable = dict[tuple[str, str, str], Bounds]  # (scope, key, measurement) -> bounds


def parse_limits(rows: list[dict], contract: Contract) -> LimitTable:
    """The table's rows (column -> text or number) as limits; a bad row is refused in one line that names it."""
    table: LimitTable = {}
    for number, row in enumerate(rows, start=1):
        where = f"limits row {number} ({', '.join(f'{k}={v}' for k, v in row.items() if v not in (None, ''))})"
        scope, key, measurement = (str(row.get(name) or "").strip() for name in ("scope", "key", "measurement"))
        if scope not in SCOPES:
            raise StreamdashError(f"{where}: scope must be one of {', '.join(SCOPES)}")
        if (scope == "fleet") != (key == ""):
            raise StreamdashError(f"{where}: key names the {scope} (and is empty for the fleet)")
        if measurement not in contract.measurements:
            raise StreamdashError(f"{where}: {measurement!r} is not a measurement of the contract")
        try:
            bounds = Bounds(**{name: None if row.get(name) in (None, "") else float(row[name]) for name in BOUNDS})
        except (TypeError, ValueError):
            raise StreamdashError(f"{where}: each bound is a number or empty") from None
        if any(value is not None and not math.isfinite(value) for value in vars(bounds).values()):
            raise StreamdashError(f"{where}: each bound is a finite number or empty")
        if (scope, key, measurement) in table:
            raise StreamdashError(f"{where}: the {scope} {key} has limits for {measurement} twice")
        table[(scope, key, measurement)] = bounds
    return table


def limit_lines(contract: Contract, statistic: str, table: LimitTable, row: dict) -> list[str]:
    """A device window (a row of `windowed_aggregates`) -> one `telemetry_limits` point per judged measurement."""
    if row["level"] != "device":
        return []
    points = []
    for measurement in contract.measurements:
        value = row.get(f"{measurement}_{statistic}")
        keys = ((scope, "" if column is None else str(row[column]), measurement) for scope, column in SCOPES.items())
        bounds = next((table[key] for key in keys if key in table), None)
        if bounds is None or value is None or not math.isfinite(value):
            continue
        level, limit = bounds.judge(value)
        tags = {"site": row["site"], "device": row["device_id"], "device_type": row["device_type"],
                "measurement": measurement, "window": row["window"]}
        fields = {"level": level, "state": STATES[level], "value": float(value),
                  **({"limit": float(limit)} if limit is not None else {})}
        points.append(line(LIMITS_MEASUREMENT, tags, fields, row["window_start_ns"]))
    return points


class LiveLimits:
    """The limits as the job reads them again while it runs: `lines()` gives each batch the function that judges
    its rows with the table as last read (plain values, shipped to the executors)."""

    def __init__(self, spark: SparkSession, config: Limits, contract: Contract):
        self.spark, self.config, self.contract = spark, config, contract
        self.table = self.read()  # at start, a table that cannot be read stops the job
        self.read_at = time.monotonic()

    def read(self) -> LimitTable:
        config = self.config
        try:
            frame = (delta.read(self.spark, config.path) if config.format == "delta"
                     else self.spark.read.option("header", True).csv(config.path))
            rows = [row.asDict() for row in frame.collect()]
        except Exception as err:  # noqa: BLE001 - named in one line
            raise StreamdashError(f"limits.path {config.path}: cannot be read ({str(err).splitlines()[0]:.300})"
                                  ) from None
        return parse_limits(rows, self.contract)

    def lines(self):
        if time.monotonic() - self.read_at >= duration_seconds(self.config.reread_every):
            self.read_at = time.monotonic()
            try:
                self.table = self.read()
            except StreamdashError as err:
                log.error("%s; the limits read before stay in force", err)
        return partial(limit_lines, self.contract, self.config.statistic, self.table)
