"""The InfluxDB schema: which measurement, tags, fields and timestamp each output row becomes.

| measurement         | tags                              | fields                                  | time         |
|---------------------|-----------------------------------|-----------------------------------------|--------------|
| telemetry_device    | site, device, device_type, window | count (int), <m>_{mean,min,max,last,    | window start |
|                     | and the contract's tags           | stddev,p95} for each measurement <m>    |              |
|                     |                                   | (the contract's statistics)             |              |
| telemetry_site      | site, window                      | as telemetry_device                     | window start |
| telemetry_limits    | site, device, device_type,        | level (0 ok, 1 warn, 2 crit), state,    | window start |
|                     | measurement, window               | value, limit (the bound passed)         |              |
| pipeline_deadletter | stream (the query name), reason   | count (int)                             | see below    |
| pipeline_progress   | stream (the query name)           | see `streamdash.metrics`                | batch start  |
| pipeline_writes     | stream (the query name)           | see `streamdash.metrics`                | windows written |

A statistic that overflows a double (a sum or a variance of values near 1e308) cannot be written: it is left out
of its point, and the point's `stats_overflowed` field counts how many were (see a measurement's `range`).

Tags are low-cardinality dimensions; the window size is a tag so one series never mixes window sizes.
Timestamps are nanoseconds. A point's identity is a pure function of the data, so a replayed micro-batch
or a window re-emitted in update mode overwrites its earlier point instead of adding another.
"""

from __future__ import annotations

import math

from streamdash.config import Contract
from streamdash.sinks.line_protocol import line

DEVICE_MEASUREMENT = "telemetry_device"
SITE_MEASUREMENT = "telemetry_site"
LIMITS_MEASUREMENT = "telemetry_limits"  # `streamdash.limits`
DEAD_LETTER_MEASUREMENT = "pipeline_deadletter"
PROGRESS_MEASUREMENT = "pipeline_progress"
WRITES_MEASUREMENT = "pipeline_writes"


def aggregate_line(contract: Contract, row: dict) -> str | None:
    """A row of `transforms.aggregate.windowed_aggregates` under `contract` -> one point."""
    tags = {"site": row["site"], "window": row["window"]}
    if row["level"] == "device":
        measurement = DEVICE_MEASUREMENT
        tags |= {"device": row["device_id"], "device_type": row["device_type"],
                 **{name: value for name, value in (row.get("tags") or {}).items() if value is not None}}
    else:
        measurement = SITE_MEASUREMENT
    stats = {name: row[name] for name in contract.stat_columns()}
    overflowed = sum(1 for value in stats.values() if isinstance(value, float) and not math.isfinite(value))
    fields = {"count": int(row["count"]), **stats, **({"stats_overflowed": overflowed} if overflowed else {})}
    return line(measurement, tags, fields, row["window_start_ns"])


def dead_letter_count_line(row: dict, stream: str, batch_id: int, batch_ms: int) -> str | None:
    """Dead letters of one reason (`row`: reason, count) in one micro-batch of one query -> one point.

    Its time is the batch's (`batch_ms`: when the job planned it, by its own clock; never a device's, so an
    alert over the last hour sees a record stamped 1970 or 2200 too) plus the batch id in the sub-millisecond
    digits: the same on a replay of that batch, different from every other batch.
    """
    timestamp_ns = batch_ms * 1_000_000 + batch_id % 1_000_000
    return line(DEAD_LETTER_MEASUREMENT, {"stream": stream, "reason": row["reason"]}, {"count": int(row["count"])},
                timestamp_ns)
