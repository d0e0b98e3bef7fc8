"""The InfluxDB schema: which measurement, tags, fields and timestamp each output row becomes.

| measurement         | tags                              | fields                                  | time         |
|---------------------|-----------------------------------|-----------------------------------------|--------------|
| telemetry_device    | site, device, device_type, window | count (int), <m>_{mean,min,max,last,    | window start |
|                     |                                   | stddev,p95} for each measurement <m>    |              |
| telemetry_site      | site, window                      | as telemetry_device                     | window start |
| pipeline_deadletter | reason                            | count (int)                             | see below    |
| pipeline_progress   | stream (the query name)           | see `streamdash.metrics`                | batch time   |

Tags are low-cardinality dimensions; the window size is a tag so one series never mixes window sizes.
Timestamps are nanoseconds. A point's identity is a pure function of the data, so a replayed micro-batch
or a window re-emitted in update mode overwrites its earlier point instead of adding another.
"""

from __future__ import annotations

from streamdash.events import MEASUREMENTS
from streamdash.sinks.line_protocol import line
from streamdash.transforms.aggregate import STATS

DEVICE_MEASUREMENT = "telemetry_device"
SITE_MEASUREMENT = "telemetry_site"
DEAD_LETTER_MEASUREMENT = "pipeline_deadletter"
PROGRESS_MEASUREMENT = "pipeline_progress"
STAT_FIELDS = tuple(f"{m}_{stat}" for m in MEASUREMENTS for stat in STATS)


def aggregate_line(row: dict) -> str | None:
    """A row of `transforms.aggregate.windowed_aggregates` -> one point."""
    tags = {"site": row["site"], "window": row["window"]}
    if row["level"] == "device":
        measurement = DEVICE_MEASUREMENT
        tags |= {"device": row["device_id"], "device_type": row["device_type"]}
    else:
        measurement = SITE_MEASUREMENT
    fields = {"count": int(row["count"]), **{name: row[name] for name in STAT_FIELDS}}
    return line(measurement, tags, fields, row["window_start_ns"])


def dead_letter_count_line(row: dict) -> str | None:
    """Dead letters of one reason in one micro-batch -> one point.

    Its time is the newest Kafka timestamp among those records plus the batch id in the sub-millisecond
    digits: the same on a replay of that batch, different from every other batch.
    """
    timestamp_ns = row["max_kafka_timestamp_us"] * 1000 + row["batch_id"] % 1_000_000
    return line(DEAD_LETTER_MEASUREMENT, {"reason": row["reason"]}, {"count": int(row["count"])}, timestamp_ns)
