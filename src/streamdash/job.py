"""The streaming job's process: load the configuration, start the pipeline's query (`pipeline`), keep it running
until SIGTERM or SIGINT, then stop cleanly (the batch in flight finishes and commits)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from pyspark.errors import StreamingQueryException
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from streamdash import lifetime
from streamdash.carry_over import Recompute, carry_over
from streamdash.checkpoint import is_committed, last_committed_batch, layout_changes, uncommitted_batch
from streamdash.command_line import configuration_arguments, configure_logging
from streamdash.config import Settings, duration_seconds, load_settings
from streamdash.errors import StreamdashError
from streamdash.metrics import InfluxProgressListener
from streamdash.pipeline import query_checkpoints, query_starters, unreadable_records
from streamdash.session import (
    check_delta,
    failure_summary,
    finish_state_store_maintenance,
    hit_kafka_metrics_bug,
    spark_session,
)
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sources import kafka
from streamdash.sources.unreadable import UnreadableRecords, is_unreadable_failure
from streamdash.transforms.aggregate import state_layout

log = logging.getLogger("streamdash.job")


def run(settings: Settings, verbose: bool = False) -> None:
    """Run until SIGTERM/SIGINT (then finish the batch in flight and stop) or until a query fails."""
    spark = spark_session(settings, verbose)
    check_delta(spark, settings)
    listener = None
    if settings.job.self_metrics:
        listener = InfluxProgressListener(InfluxWriter.from_config(settings.influxdb))
        spark.streams.addListener(listener)
    if settings.job.on_contract_change == "carry_over":
        layout = state_layout(settings.contract)
        if changed := layout_changes(spark, settings.job.checkpoint_location.rstrip("/"), layout):
            carry_over(spark, settings, layout, changed)
    starters = query_starters(spark, settings)
    queries = {name: start() for name, start in starters.items()}
    log.info("started %d queries: %s", len(queries), ", ".join(queries))
    stopping = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stopping.set())
    checkpoints = query_checkpoints(settings)
    restarts = Restarts(spark, checkpoints, unreadable_records(spark, settings))
    recompute = Recompute(spark, settings, stopping)
    try:
        while not stopping.is_set():
            recompute.step()
            try:
                if not spark.streams.awaitAnyTermination(1.0):
                    continue
            except StreamingQueryException:
                pass
            spark.streams.resetTerminated()
            ended = [name for name, query in queries.items() if not query.isActive]
            if not all(restarts.allowed(name, queries) for name in ended):
                break
            for name in ended:
                if not stopping.wait(restarts.delay_s(name)):
                    queries[name] = starters[name]()
    finally:
        cancelled = stop_gracefully(spark, queries, checkpoints, duration_seconds(settings.job.stop_timeout))
        # Detached once it has heard every query end, while the gateway is still up: the JVM's listener bus
        # would otherwise call back into a Python process that is going away, and print a stack trace.
        if listener:
            listener.wait_terminated({str(q.id) for q in queries.values()}, timeout_s=30)
            spark.streams.removeListener(listener)
        finish_state_store_maintenance(spark)
    failed = [q for q in queries.values() if q.exception() is not None]
    if failed:
        raise StreamdashError(f"query {failed[0].name} failed: {failure_summary(failed[0].exception())}")
    if cancelled:
        raise StreamdashError(f"stopped, but {cancelled[0]}; it will be replayed from the checkpoint on the next "
                              f"start (job.stop_timeout is {settings.job.stop_timeout})")
    log.info("stopped cleanly")


class Restarts:
    """When a failed query starts again in the same process: after SPARK-55271 (once), after a step past a record
    Spark's Kafka source cannot read (`sources.unreadable`), and while another query goes on, up to `MAX` times in a
    row without a batch committed in between (the dashboards keep their freshness through a Delta table's outage; a
    query that cannot get past a batch ends the job, whose failure names it)."""

    MAX, DELAY_S = 3, 10.0

    def __init__(self, spark: SparkSession, checkpoints: dict[str, str],
                 unreadable: dict[str, UnreadableRecords] | None = None):
        self.spark, self.checkpoints, self.unreadable = spark, checkpoints, unreadable or {}
        self.in_a_row: dict[str, tuple[int, int | None]] = {}  # query: (restarts, last committed batch then)
        self.after_bug: set[str] = set()

    def allowed(self, name: str, queries: dict[str, StreamingQuery]) -> bool:
        query = queries[name]
        if hit_kafka_metrics_bug(query) and name not in self.after_bug:
            log.warning("query %s hit SPARK-55271 after recovery; starting it again from its checkpoint", name)
            self.after_bug.add(name)
            return True
        if (name in self.unreadable and is_unreadable_failure(query.exception())
                and self.unreadable[name].skip(name, self.checkpoints[name])):
            self.after_bug.discard(name)  # the start from the changed checkpoint is another recovery
            return True
        if query.exception() is None or not any(q.isActive for q in queries.values()):
            return False
        committed = last_committed_batch(self.spark, self.checkpoints[name])
        count, before = self.in_a_row.get(name, (0, committed))
        count = count + 1 if committed == before else 1  # a batch committed since: a new run of failures
        if count > self.MAX:
            return False
        self.in_a_row[name] = (count, committed)
        log.error("query %s failed: %s; the other queries go on, and it starts again from its checkpoint in %.0f s "
                  "(%d of %d in a row)", name, failure_summary(query.exception()), self.delay_s(name), count,
                  self.MAX)
        return True

    def delay_s(self, name: str) -> float:
        return self.DELAY_S * self.in_a_row.get(name, (0, None))[0]


def stop_gracefully(spark: SparkSession, queries: dict[str, StreamingQuery], checkpoints: dict[str, str],
                    timeout_s: float) -> list[str]:
    """Let each query's batch in flight when the stop came commit (within `timeout_s` in all), then stop the
    query at once, before another batch gets far; returns one phrase for each batch it had to cancel instead.

    A stream runs its batches back to back when it is behind, so a gap between them is no signal: the commit log
    is. A batch that began after the stop is interrupted, having written nothing a replay does not overwrite."""
    deadline = time.monotonic() + timeout_s
    in_flight = {name: uncommitted_batch(spark, checkpoints[name]) for name, query in queries.items()
                 if query.isActive}
    cancelled = []
    for name, query in queries.items():
        batch = in_flight.get(name)
        if batch is not None:
            log.info("stopping %s after its batch %d", name, batch)
        while (batch is not None and query.isActive and not is_committed(spark, checkpoints[name], batch)
               and time.monotonic() < deadline):
            time.sleep(0.05)
        unfinished = batch is not None and query.isActive and not is_committed(spark, checkpoints[name], batch)
        query.stop()
        if unfinished:
            cancelled.append(f"query {name}'s batch {batch} was still running and is cancelled")
        elif batch is not None and uncommitted_batch(spark, checkpoints[name]) is not None:
            log.info("%s: the batch begun after the stop is left to the next start", name)
    return cancelled


def parse_args(argv: list[str], default_conf_dir: Path) -> argparse.Namespace:
    """The job's command line: what spark-submit and the bundle's spark_python_task pass."""
    parser = configuration_arguments(argparse.ArgumentParser(prog="stream_to_influx", description=__doc__),
                                     default_conf_dir)
    parser.add_argument("--verbose", action="store_true", help="Spark's and py4j's INFO logs too")
    return parser.parse_args(argv)


def main(argv: list[str], default_conf_dir: Path) -> None:
    if "PYSPARK_GATEWAY_PORT" in os.environ and not kafka.on_databricks():
        lifetime.die_with_parent(signal.SIGKILL)  # under spark-submit: the JVM is the parent; no orphan driver
    args = parse_args(argv, default_conf_dir)
    configure_logging(args.verbose)
    try:
        settings = load_settings(args.env, args.conf_dir, args.overrides)
        run(settings, args.verbose)
    except StreamdashError as err:
        log.error("%s", err)
        sys.exit(1)
