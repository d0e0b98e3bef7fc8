"""Event-time windowed aggregates per device and per site, for every window size in one stateful pass.

Within the watermark, a repeated (device_id, seq, event_time) counts once (`events.DEDUPLICATION_KEY`) and is
counted as a dropped duplicate; events older than the watermark are dropped by Spark (at the deduplication) and
counted in the self-metrics. Each remaining event becomes one row per (window
size, level), all grouped together under `window(event_time, <largest size>)`, which carries the watermark so
Spark evicts a group once its largest window has closed (every size divides the largest, so each bucket lies in
exactly one largest window). Adding a window size adds rows, not a query. Output mode is `update`: a window is
emitted again each time a batch changes it, and the sink overwrites the earlier point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from streamdash.columns import GROUP_COLUMNS, GROUP_KEY_PREFIX
from streamdash.config import DEFAULT_QUANTILE_SKETCH_K, Contract, duration_seconds, window_label
from streamdash.events import DEDUPLICATION_KEY


@dataclass(frozen=True)
class Statistic:
    """One statistic of a measurement: how it aggregates a group's values (streaming state holds the result)
    and how the written value is read from it. `latest` orders values by recency (for `last`)."""

    name: str
    aggregate: Callable[[Column, Column, int], Column]
    final: Callable[[Column], Column] = lambda state: state


# The statistics the contract can ask for (`config.STATISTIC_NAMES`, which validates its `statistics`), in field
# order. Adding one means adding it here and to `STATISTIC_NAMES`.
STATISTICS = (
    Statistic("mean", lambda value, latest, k: F.avg(value)),
    Statistic("min", lambda value, latest, k: F.min(value)),
    Statistic("max", lambda value, latest, k: F.max(value)),
    Statistic("last", lambda value, latest, k: F.max_by(value, latest)),
    Statistic("stddev", lambda value, latest, k: F.stddev_samp(value)),
    # A mergeable KLL sketch: state stays small (k items per level) however many values a window has. A window in
    # which the measurement has no value holds an empty sketch, whose quantile Spark refuses (KLL_SKETCH_INVALID_INPUT):
    # it gets no p95, as a window of one value gets no stddev.
    Statistic("p95", lambda value, latest, k: F.kll_sketch_agg_double(value, F.lit(k)),
              lambda sketch: F.when(F.kll_sketch_get_n_double(sketch) > 0,
                                    F.kll_sketch_get_quantile_double(sketch, F.lit(0.95)))),
)


# Where Spark marks a column as a watermark's event time (`EventTimeWatermark.delayKey`).
WATERMARK_DELAY_KEY = "spark.watermarkDelayMs"


def with_watermark(events: DataFrame, watermark: str) -> DataFrame:
    """`events` with the watermark on `event_time`, unless it has one already (set before a shuffle:
    `batch.split_once`)."""
    if WATERMARK_DELAY_KEY in events.schema["event_time"].metadata:
        return events
    return events.withWatermark("event_time", watermark)


def deduplicate(events: DataFrame, watermark: str,
                key: tuple[str, ...] | None = DEDUPLICATION_KEY) -> DataFrame:
    """Drop exact re-deliveries: the same `key` (`Contract.deduplication_key`) seen again within the watermark delay
    (a null seq, without a sequence field, is one value: then the key is the device and the event time). A batch (a
    notebook's read of the topic) has no watermark to bound its state, so there every repeat is dropped. With no
    key (`contract.deduplicate` off), events only get the watermark."""
    if key is None:
        return with_watermark(events, watermark) if events.isStreaming else events
    if not events.isStreaming:
        return events.dropDuplicates(list(key))
    return with_watermark(events, watermark).dropDuplicatesWithinWatermark(list(key))


def state_layout(contract: Contract) -> dict:
    """What the aggregation's state in a checkpoint depends on beyond Spark's own checks: a checkpoint written
    under another layout cannot be continued (`checkpoint.check_checkpoint`). `columns` names what every group
    holds besides the statistics: since 0.5 its newest event time too."""
    return {"columns": list(GROUP_COLUMNS),
            "deduplication_key": list(key) if (key := contract.deduplication_key()) else None,
            "measurements": list(contract.measurements), "statistics": list(contract.statistics),
            "tags": list(contract.tags)}




def window_end_ms(window_sizes: list[str]) -> Column:
    """The end of an output row's window (`window_start_ns` plus its size), in milliseconds."""
    size_ms = F.create_map(*[F.lit(value) for size in window_sizes
                             for value in (window_label(size), int(duration_seconds(size) * 1000))])
    return F.col("window_start_ns") / 1_000_000 + size_ms[F.col("window")]


def _groupings(window_sizes: list[str], device_keys: dict[str, str]) -> Column:
    """One struct per (size, level): the window label, the bucket start in microseconds and the level's keys:
    `device_keys` (column: SQL type) on device rows, nulls of the same types on site rows."""
    event_us = F.unix_micros("event_time")
    rows = []
    for size in window_sizes:
        size_us = int(duration_seconds(size)) * 1_000_000
        start_us = event_us - F.pmod(event_us, F.lit(size_us))
        for level in ("device", "site"):
            keys = [(F.col(key) if level == "device" else F.lit(None).cast(sql_type)).alias(f"{GROUP_KEY_PREFIX}{key}")
                    for key, sql_type in device_keys.items()]
            rows.append(F.struct(F.lit(level).alias("level"), F.lit(window_label(size)).alias("window"),
                                 start_us.alias("start_us"), *keys))
    return F.array(*rows)


def windowed_aggregates(events: DataFrame, window_sizes: list[str], sketch_k: int = DEFAULT_QUANTILE_SKETCH_K,
                        contract: Contract | None = None) -> DataFrame:
    """Deduplicated, watermarked events -> one row per (window size, window, site, device) and per
    (window size, window, site).

    Columns: level ('device' or 'site'), window (label such as '10s'), window_start_ns, site, device_type,
    device_id (both null on site rows), `tags` (the device's, when `contract` has any; null on site rows), count,
    newest_event_ns (the newest event time in the window: how fresh it is), and `contract.stat_columns()`:
    <measurement>_<statistic> for each measurement and statistic.
    """
    contract = contract or Contract()
    largest = max(window_sizes, key=duration_seconds)
    device_keys = {"device_id": "string", "device_type": "string",
                   **({"tags": events.schema["tags"].dataType.simpleString()} if contract.tags else {})}
    rows = events.select("*", F.inline(_groupings(window_sizes, device_keys)))
    latest = F.struct("event_time", "device_id", "seq")
    statistics = [statistic for statistic in STATISTICS if statistic.name in contract.statistics]
    states = [statistic.aggregate(F.col(m), F.when(F.col(m).isNotNull(), latest), sketch_k)
              .alias(f"{m}_{statistic.name}") for m in contract.measurements for statistic in statistics]
    grouped = rows.groupBy(F.window("event_time", largest).alias("largest_window"), "level", "window", "start_us",
                           "site", *[f"{GROUP_KEY_PREFIX}{key}" for key in device_keys])
    finals = {f"{m}_{statistic.name}": statistic.final(F.col(f"{m}_{statistic.name}"))
              for m in contract.measurements for statistic in statistics}
    newest_ns = F.unix_micros(F.max("event_time")) * 1000
    return grouped.agg(F.count(F.lit(1)).alias("count"), newest_ns.alias("newest_event_ns"), *states).select(
        "level", "window", (F.col("start_us") * 1000).alias("window_start_ns"), "site",
        F.col("key_device_type").alias("device_type"), F.col("key_device_id").alias("device_id"),
        *([F.col("key_tags").alias("tags")] if contract.tags else []), "count", "newest_event_ns",
        *[column.alias(name) for name, column in finals.items()],
    )
