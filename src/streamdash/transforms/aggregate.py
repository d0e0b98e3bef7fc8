"""Event-time windowed aggregates per device and per site, for one tumbling window size.

Within the watermark, a repeated (device_id, seq) counts once. Events older than the watermark are dropped
by Spark and show up in the self-metrics as rows dropped by the watermark. Output mode is `update`: a window
is emitted again each time a batch changes it, and the sink overwrites the earlier point.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from streamdash.config import window_label
from streamdash.events import MEASUREMENTS

STATS = ("mean", "min", "max", "last", "stddev", "p95")


def deduplicate(events: DataFrame, watermark: str) -> DataFrame:
    """Drop exact re-deliveries: the same (device_id, seq) seen again within the watermark delay. A batch (a
    notebook's read of the topic) has no watermark to bound its state, so there every repeat is dropped."""
    if not events.isStreaming:
        return events.dropDuplicates(["device_id", "seq"])
    return events.withWatermark("event_time", watermark).dropDuplicatesWithinWatermark(["device_id", "seq"])


def _measurement_stats(name: str, accuracy: int) -> list[Column]:
    value = F.col(name)
    latest_first = F.when(value.isNotNull(), F.struct("event_time", "device_id", "seq"))
    return [
        F.avg(value).alias(f"{name}_mean"),
        F.min(value).alias(f"{name}_min"),
        F.max(value).alias(f"{name}_max"),
        F.max_by(value, latest_first).alias(f"{name}_last"),
        F.stddev_samp(value).alias(f"{name}_stddev"),
        F.percentile_approx(value, 0.95, accuracy).alias(f"{name}_p95"),
    ]


def windowed_aggregates(events: DataFrame, window_size: str, accuracy: int = 10000) -> DataFrame:
    """Deduplicated, watermarked events -> one row per (window, site, device) and per (window, site).

    Columns: level ('device' or 'site'), window (label such as '10s'), window_start_ns, site, device_type,
    device_id (null on site rows), count, and <measurement>_<stat> for each measurement and stat.
    """
    window = F.window("event_time", window_size)
    keys = [window, F.col("site"), F.col("device_type"), F.col("device_id")]
    grouped = events.groupingSets([keys, [window, F.col("site")]], *keys)
    stats = [stat for m in MEASUREMENTS for stat in _measurement_stats(m, accuracy)]
    aggregated = grouped.agg(F.count(F.lit(1)).alias("count"), F.grouping_id().alias("_grouping"), *stats)
    return aggregated.select(
        F.when(F.col("_grouping") == 0, F.lit("device")).otherwise(F.lit("site")).alias("level"),
        F.lit(window_label(window_size)).alias("window"),
        (F.unix_micros(F.col("window.start")) * 1000).alias("window_start_ns"),
        "site", "device_type", "device_id", "count",
        *[f"{m}_{stat}" for m in MEASUREMENTS for stat in STATS],
    )
