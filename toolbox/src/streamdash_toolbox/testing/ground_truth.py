"""Expected InfluxDB content computed independently (plain Python) from the simulator's manifest."""

from __future__ import annotations

import bisect
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from streamdash.config import Contract

COUNTED = ("on_time", "out_of_order", "late_within")
# What a backfill counts: it has no watermark, so also what arrived too late for the stream.
BACKFILLED = (*COUNTED, "late_beyond")


def manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def counted_events(entries: list[dict], deduplicate: bool = True, categories: tuple[str, ...] = COUNTED) -> list[dict]:
    """What the job must aggregate: counted categories, each (device, seq, event time) once: a device that restarts
    its sequence sends the same seq again at another time, which is another event (without a sequence, seq is None:
    the device and the event time; with one reading per record, the reading's name too). Every one of them
    without deduplication."""
    seen, events = set(), []
    for entry in entries:
        event = entry["event"]
        key = (event["device_id"], event["seq"], event["event_time_ms"], event.get("reading")) if event else None
        if entry["category"] in categories and (key not in seen or not deduplicate):
            seen.add(key)
            events.append(event)
    return events


KLL_RANK_ERROR = 0.0165  # DataSketches' normalized rank error bound for k = 200 (99% confidence)


@dataclass(frozen=True)
class Quantile:
    """A quantile checked by rank, as a KLL sketch promises: the written value is one of the values, and its
    rank is within the sketch's error of the requested one (exact while a window has at most k values)."""

    values: tuple[float, ...]  # sorted
    q: float

    def accepts(self, value: float) -> bool:
        n = len(self.values)
        lowest, highest = bisect.bisect_left(self.values, value), bisect.bisect_right(self.values, value)
        slack = KLL_RANK_ERROR * n
        # ranks lowest+1 .. highest hold `value`; the exact quantile is rank ceil(q * n)
        return highest > lowest and lowest + 1 - slack <= math.ceil(self.q * n) <= highest + slack

    def __repr__(self) -> str:
        exact = self.values[math.ceil(self.q * len(self.values)) - 1]
        return f"Quantile(q={self.q}, n={len(self.values)}, exact={exact})"


def _stats(events: list[dict], contract: Contract) -> dict:
    fields: dict = {"count": len(events)}
    for m in contract.measurements:
        values = [e[m] for e in events if e.get(m) is not None]
        if not values:  # a sensor the window's devices lack, or that reported null throughout: no statistics
            continue
        latest = max((e for e in events if e.get(m) is not None),
                     key=lambda e: (e["event_time_ms"], e["device_id"], -1 if e["seq"] is None else e["seq"]))
        computed = {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "last": latest[m],
                    "p95": Quantile(tuple(sorted(values)), 0.95),
                    **({"stddev": statistics.stdev(values)} if len(values) > 1 else {})}
        fields |= {f"{m}_{name}": value for name, value in computed.items() if name in contract.statistics}
    return fields


def expected_points(events: list[dict], windows: dict[str, int], contract: Contract | None = None
                    ) -> dict[tuple, dict]:
    """{(measurement, window label, site, device or None, window start ns): fields}."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for label, size_s in windows.items():
        size_ms = size_s * 1000
        for event in events:
            start_ns = (event["event_time_ms"] // size_ms) * size_ms * 1_000_000
            groups[("telemetry_device", label, event["site"], event["device_id"], start_ns)].append(event)
            groups[("telemetry_site", label, event["site"], None, start_ns)].append(event)
    return {key: _stats(group, contract or Contract()) for key, group in groups.items()}
