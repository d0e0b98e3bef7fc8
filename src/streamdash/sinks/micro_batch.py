"""The query's `foreachBatch` handler: one micro-batch (`transforms.batch`) to its sinks, in order.

1. the windows to InfluxDB, then to the views (Grafana Live): freshness is what the dashboards feel. The same
   pass over the batch counts its dead letters, so a batch without any is one Spark job;
2. the windows to the gold table and every raw record to the bronze table, when configured (`sinks.delta`),
   both at once;
3. the points InfluxDB refused, to the dead letters of the query's stream;
4. the records that failed validation (when the first pass counted any), to the dead letters of
   `<job>_dead_letters`;
5. what it saw of these writes, to `pipeline_writes` (`metrics.writes_line`).

The batch is kept in memory while it is written, so its source is read and its state updated once. Every write is
idempotent, so a batch replayed after a crash changes nothing that had landed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyspark import InheritableThread
from pyspark.sql import DataFrame, SparkSession

from streamdash.metrics import writes_line
from streamdash.sinks.dead_letter import DeadLetters, invalid_records, refused_points, tally
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.lines import LineSinks
from streamdash.sinks.report import BatchSink, WriteReport
from streamdash.transforms import batch as batch_shape

log = logging.getLogger(__name__)


def together(calls: list[Callable[[], object]], session: SparkSession) -> None:
    """Run the writes at the same time, each on a thread that keeps the query's job properties (through `session`,
    which Spark Connect needs), and raise the first failure once all have ended. A Delta commit is mostly the
    driver's work and waiting, so the gold merge and the bronze append overlap."""
    if len(calls) < 2:
        for call in calls:
            call()
        return
    failures: list[BaseException] = []

    def run(call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as err:  # noqa: BLE001 - re-raised below, on the batch's own thread
            failures.append(err)

    threads = [InheritableThread(run, args=(call,), session=session) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


@dataclass(frozen=True)
class MicroBatchWriter:
    stream: str  # the query's name
    windows: LineSinks
    refused: DeadLetters  # stream: the query's name
    invalid: DeadLetters  # stream: `<job>_dead_letters`
    metrics: InfluxWriter | None = None  # `metrics.metrics_writer`; None: no `pipeline_writes` point
    gold: BatchSink | None = None
    bronze: BatchSink | None = None

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        batch.persist()
        try:
            # One pass: the windows are written and the dead letters counted; without any, none is read again.
            windows = self.windows.write(batch_shape.windows_and_tallies(batch, tally), batch_id)
            windows_written_ns = time.time_ns()
            together([lambda sink=sink, rows=rows: sink.write(rows(batch), batch_id)
                      for sink, rows in ((self.gold, batch_shape.windows), (self.bronze, batch_shape.records)) if sink],
                     batch.sparkSession)
            refused = WriteReport()
            if windows.rejected:
                log.warning("%s batch %d: InfluxDB refused %d points; they are dead letters, e.g. %s", self.stream,
                            batch_id, len(windows.rejected), windows.rejected[0][1])
                refused = self.refused.write(refused_points(batch.sparkSession, windows.rejected), batch_id)
            letters = WriteReport()
            if windows.dead_letters:  # else not even a DataFrame to plan
                counted = [{"reason": reason, **seen} for reason, seen in windows.dead_letters.items()]
                letters = self.invalid.write(invalid_records(batch_shape.dead_letters(batch)), batch_id, counted)
        finally:
            batch.unpersist()
        if self.metrics:
            blocked_ms = round((windows.blocked_s + refused.blocked_s + letters.blocked_s) * 1000)
            self._write_metrics(writes_line(self.stream, batch_id, windows_written_ns, windows,
                                            len(windows.rejected), letters.written, blocked_ms))

    def _write_metrics(self, point: str | None) -> None:
        try:
            report = self.metrics.write_lines([point])
        except Exception as err:  # noqa: BLE001 - metrics must never stop the pipeline
            log.warning("could not write %s's pipeline_writes point: %s", self.stream, err)
            return
        for refused, why in report.rejected:
            log.warning("InfluxDB refused a self-metrics point (%s): %s", why, refused)
