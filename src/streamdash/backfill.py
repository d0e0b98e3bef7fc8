"""Recompute the windows of a time range from the bronze table and write them to InfluxDB and the gold table, with
the stream's own parse, deduplication and aggregation: how a lost InfluxDB is rebuilt, and how a new window size or
statistic gets its history, long after the event hub has dropped the events.

Each record is judged as the stream judged it (against `reference_time(ingested_at)`), so the same records are
valid. Unlike the stream, a batch has no watermark: an event that arrived later than the watermark, which the
stream dropped (and counted), is counted here, and a duplicate is dropped however late it came. It reads the records
the stream read from `start - validation.max_event_time_ahead` to `end + the largest window + the watermark` and
writes the windows that start in [start, end); writing one again overwrites it, so a backfill can be repeated.

    spark-submit jobs/backfill.py --env local --from 2026-12-01T00:00:00Z --to 2026-12-02T00:00:00Z
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from functools import partial
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from streamdash.columns import READ_AT
from streamdash.config import Settings, duration_seconds, load_settings
from streamdash.errors import StreamdashError
from streamdash.job import configuration_arguments, configure_logging
from streamdash.session import configure_parse
from streamdash.sinks import delta
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.lines import LineSinks
from streamdash.sinks.points import aggregate_line
from streamdash.transforms.aggregate import deduplicate, windowed_aggregates
from streamdash.transforms.parse import parse_events, reference_time, valid_events

log = logging.getLogger("streamdash.backfill")
BACKFILL_BATCH_ID = -1  # the gold table's batch_id of a backfilled window


def backfill(spark: SparkSession, settings: Settings, start: dt.datetime, end: dt.datetime) -> dict[str, int]:
    """Rewrite the windows that start in [start, end); returns what it read and wrote."""
    bronze = settings.lakehouse.bronze
    if bronze is None:
        raise StreamdashError("backfill reads the bronze table: set lakehouse.bronze")
    if not delta.exists(spark, bronze):
        raise StreamdashError(f"backfill: no bronze table at {bronze}")
    if end <= start:
        raise StreamdashError(f"backfill: --to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    sizes = settings.aggregation.window_sizes
    after = dt.timedelta(seconds=max(map(duration_seconds, sizes)) + duration_seconds(settings.aggregation.watermark))
    first = start - dt.timedelta(seconds=duration_seconds(settings.validation.max_event_time_ahead))
    records = (delta.read(spark, bronze)
               .where(F.col("ingest_date").between(first.date(), (end + after).date()))
               .where(F.col(READ_AT).between(first, end + after)))
    parsed = parse_events(records, settings.validation, settings.contract, reference_time(F.col(READ_AT)))
    events = deduplicate(valid_events(parsed), settings.aggregation.watermark, settings.contract.deduplicate)
    windows = (windowed_aggregates(events, sizes, settings.aggregation.quantile_sketch_k, settings.contract)
               .where(F.col("window_start_ns").between(_ns(start), _ns(end) - 1)).persist())
    try:
        counts = {"records": records.count(), "windows": windows.count()}
        log.info("backfill %s to %s: %d records read, %d windows", start.isoformat(), end.isoformat(),
                 counts["records"], counts["windows"])
        influxdb = LineSinks(partial(aggregate_line, settings.contract), InfluxWriter.from_config(settings.influxdb))
        written = influxdb.write(windows, BACKFILL_BATCH_ID)
        if written.rejected:
            raise StreamdashError(f"backfill: InfluxDB refused {len(written.rejected)} points, e.g. "
                                  f"{written.rejected[0][1]}")
        log.info("backfill: %d points written to InfluxDB", written.written)
        if settings.lakehouse.gold:
            delta.GoldTable(settings.lakehouse.gold).write(windows, BACKFILL_BATCH_ID)
            log.info("backfill: gold table %s merged", settings.lakehouse.gold)
        return {**counts, "points": written.written}
    finally:
        windows.unpersist()


def _ns(moment: dt.datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def _moment(text: str) -> dt.datetime:
    """ISO-8601 with an offset (Z or +hh:mm)."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time such as 2026-12-01T00:00:00Z") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no offset: add Z or +hh:mm")
    return moment.astimezone(dt.UTC)


def parse_args(argv: list[str], default_conf_dir: Path) -> argparse.Namespace:
    """The backfill's command line: what spark-submit and the bundle's backfill task pass."""
    parser = configuration_arguments(argparse.ArgumentParser(
        prog="backfill", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter), default_conf_dir)
    parser.add_argument("--from", dest="start", type=_moment, required=True, help="first window start (ISO-8601)")
    parser.add_argument("--to", dest="end", type=_moment, required=True, help="end, exclusive (ISO-8601)")
    return parser.parse_args(argv)


def main(argv: list[str], default_conf_dir: Path) -> None:
    args = parse_args(argv, default_conf_dir)
    configure_logging()
    try:
        settings = load_settings(args.env, args.conf_dir, args.overrides)
        spark = SparkSession.builder.appName(f"{settings.job.name}_backfill").getOrCreate()
        spark.sparkContext.setLogLevel("WARN")
        spark.conf.set("spark.sql.session.timeZone", "UTC")
        configure_parse(spark)
        done = backfill(spark, settings, args.start, args.end)
        log.info("backfill done: %s", ", ".join(f"{key} {value}" for key, value in done.items()))
    except StreamdashError as err:
        log.error("%s", err)
        sys.exit(1)
