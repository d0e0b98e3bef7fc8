"""Recompute the windows of a time range from the bronze table into the gold table (and, with `--sinks
gold,influxdb`, into InfluxDB): how a lost InfluxDB is rebuilt, and how a new window size or statistic gets its
history, long after the event hub has dropped the events.

It is the gold query itself (`pipeline.gold_windows`: the stream's parse, deduplication and aggregation, with
`lakehouse.gold_lateness`) over the bronze records read from `start - validation.max_event_time_ahead` to
`end + the largest window + the lateness`, run with an available-now trigger and a checkpoint of its own that it
deletes when done. Each record is judged as the stream judged it (against `reference_time(ingested_at)`), so the
same records are valid, and the windows that start in [start, end) come out as gold has them. Writing a window
again overwrites it, so a backfill can be repeated. Into InfluxDB, each device window is judged against the limits
(`[limits]`) as they are when the backfill runs, as the stream judges its windows.

    spark-submit jobs/backfill.py --env local --from 2026-12-01T00:00:00Z --to 2026-12-02T00:00:00Z
    spark-submit jobs/backfill.py --env local --from ... --to ... --sinks gold,influxdb   # InfluxDB too
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import threading
import uuid
from functools import partial
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streamdash.columns import READ_AT
from streamdash.command_line import configuration_arguments, configure_logging
from streamdash.config import Settings, duration_seconds, load_settings
from streamdash.errors import StreamdashError
from streamdash.limits import LiveLimits
from streamdash.pipeline import gold_windows
from streamdash.session import check_delta, failure_summary, spark_session
from streamdash.sinks import delta
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.lines import LineSinks
from streamdash.sinks.points import aggregate_line
from streamdash.storage import file_system, hadoop_path
from streamdash.transforms.aggregate import window_end_ms

log = logging.getLogger("streamdash.backfill")
BACKFILL_BATCH_ID = -1  # the gold table's batch_id of a backfilled window


SINKS = ("gold", "influxdb")


def backfill(spark: SparkSession, settings: Settings, start: dt.datetime, end: dt.datetime,
             sinks: tuple[str, ...] = ("gold",), ends_after: dt.datetime | None = None,
             stop: threading.Event | None = None) -> dict[str, int]:
    """Rewrite the windows that start in [start, end) (and end after `ends_after`) in `sinks` (of `SINKS`);
    returns what it wrote. `stop` set: the backfill is stopped, and says so (a repeat writes the same)."""
    lakehouse = settings.lakehouse
    if lakehouse.bronze is None:
        raise StreamdashError("backfill reads the bronze table: set lakehouse.bronze")
    if "gold" in sinks and lakehouse.gold is None:
        raise StreamdashError("backfill into gold: set lakehouse.gold (or --sinks influxdb)")
    if not delta.exists(spark, lakehouse.bronze):
        raise StreamdashError(f"backfill: no bronze table at {lakehouse.bronze}")
    if end <= start:
        raise StreamdashError(f"backfill: --to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    after = dt.timedelta(seconds=max(map(duration_seconds, settings.aggregation.window_sizes))
                         + duration_seconds(lakehouse.gold_lateness))
    first = start - dt.timedelta(seconds=duration_seconds(settings.validation.max_event_time_ahead))
    records = (delta.read_stream(spark, lakehouse.bronze)
               .where(F.col(delta.BRONZE_PARTITION).between(first.date(), (end + after).date()))
               .where(F.col(READ_AT).between(first, end + after)))
    windows = gold_windows(settings, records).where(F.col("window_start_ns").between(_ns(start), _ns(end) - 1))
    if ends_after is not None:
        windows = windows.where(window_end_ms(settings.aggregation.window_sizes) > _ns(ends_after) / 1_000_000)
    targets = ([delta.GoldTable(lakehouse.gold)] if "gold" in sinks else []) + (
        [LineSinks(partial(aggregate_line, settings.contract), InfluxWriter.from_config(settings.influxdb),
                   limits=LiveLimits(spark, settings.limits, settings.contract) if settings.limits else None)]
        if "influxdb" in sinks else [])
    written = {"window rows": 0, "points": 0}

    def write(batch: DataFrame, batch_id: int) -> None:
        batch.persist()
        try:
            for sink in targets:
                report = sink.write(batch, BACKFILL_BATCH_ID)
                if report.rejected:
                    raise StreamdashError(f"backfill: InfluxDB refused {len(report.rejected)} points, e.g. "
                                          f"{report.rejected[0][1]}")
                written["points" if isinstance(sink, LineSinks) else "window rows"] += report.written
        finally:
            batch.unpersist()

    checkpoint = f"{settings.job.checkpoint_location.rstrip('/')}/backfill/{uuid.uuid4().hex}"
    query = (windows.writeStream.outputMode("update").queryName(f"{settings.job.name}_backfill")
             .option("checkpointLocation", checkpoint).trigger(availableNow=True).foreachBatch(write).start())
    try:
        while not query.awaitTermination(1.0):
            if stop is not None and stop.is_set():
                query.stop()
                raise StreamdashError("backfill stopped before it finished")
    except StreamdashError:
        raise
    except Exception as err:  # noqa: BLE001 - named in one line below
        raise StreamdashError(f"backfill failed: {failure_summary(err)}") from None
    finally:
        file_system(spark, checkpoint).delete(hadoop_path(spark, checkpoint), True)
    log.info("backfill %s to %s: %s", start.isoformat(), end.isoformat(),
             ", ".join(f"{value} {key}" for key, value in written.items()))
    return written


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


def _sinks(text: str) -> tuple[str, ...]:
    named = tuple(name.strip() for name in text.split(",") if name.strip())
    if not named or set(named) - set(SINKS):
        raise argparse.ArgumentTypeError(f"{text!r}: name one or both of {', '.join(SINKS)}, separated by a comma")
    return named


def parse_args(argv: list[str], default_conf_dir: Path) -> argparse.Namespace:
    """The backfill's command line: what spark-submit and the bundle's backfill task pass."""
    parser = configuration_arguments(argparse.ArgumentParser(
        prog="backfill", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter), default_conf_dir)
    parser.add_argument("--from", dest="start", type=_moment, required=True, help="first window start (ISO-8601)")
    parser.add_argument("--to", dest="end", type=_moment, required=True, help="end, exclusive (ISO-8601)")
    parser.add_argument("--sinks", type=_sinks, default=("gold",), help="where to write the windows: gold, "
                        "influxdb or gold,influxdb (default gold)")
    return parser.parse_args(argv)


def main(argv: list[str], default_conf_dir: Path) -> None:
    args = parse_args(argv, default_conf_dir)
    configure_logging()
    try:
        settings = load_settings(args.env, args.conf_dir, args.overrides)
        spark = spark_session(settings)
        check_delta(spark, settings)
        done = backfill(spark, settings, args.start, args.end, args.sinks)
        log.info("backfill done: %s", ", ".join(f"{key} {value}" for key, value in done.items()))
    except StreamdashError as err:
        log.error("%s", err)
        sys.exit(1)
