"""Expected InfluxDB content computed independently (plain Python) from the simulator's manifest."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from streamdash.events import MEASUREMENTS

COUNTED = ("on_time", "out_of_order", "late_within")


def manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def counted_events(entries: list[dict]) -> list[dict]:
    """What the job must aggregate: counted categories, each (device, seq) once."""
    seen, events = set(), []
    for entry in entries:
        event = entry["event"]
        if entry["category"] in COUNTED and (event["device_id"], event["seq"]) not in seen:
            seen.add((event["device_id"], event["seq"]))
            events.append(event)
    return events


def _p95(values: list[float]) -> float:
    """Spark's percentile_approx below its accuracy: the smallest value with >= 95% of values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _stats(events: list[dict]) -> dict:
    fields: dict = {"count": len(events)}
    for m in MEASUREMENTS:
        values = [e[m] for e in events if e.get(m) is not None]
        latest = max((e for e in events if e.get(m) is not None),
                     key=lambda e: (e["event_time_ms"], e["device_id"], e["seq"]))
        fields |= {f"{m}_mean": statistics.fmean(values), f"{m}_min": min(values), f"{m}_max": max(values),
                   f"{m}_last": latest[m], f"{m}_p95": _p95(values)}
        if len(values) > 1:
            fields[f"{m}_stddev"] = statistics.stdev(values)
    return fields


def expected_points(events: list[dict], windows: dict[str, int]) -> dict[tuple, dict]:
    """{(measurement, window label, site, device or None, window start ns): fields}."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for label, size_s in windows.items():
        size_ms = size_s * 1000
        for event in events:
            start_ns = (event["event_time_ms"] // size_ms) * size_ms * 1_000_000
            groups[("telemetry_device", label, event["site"], event["device_id"], start_ns)].append(event)
            groups[("telemetry_site", label, event["site"], None, start_ns)].append(event)
    return {key: _stats(group) for key, group in groups.items()}
