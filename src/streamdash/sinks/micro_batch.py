"""The dashboards' query's `foreachBatch` handler: one micro-batch (`transforms.batch`) to its sinks, in order.

1. the windows to InfluxDB, then to the views (Grafana Live): freshness is what the dashboards feel. The same
   pass over the batch counts its dead letters, so a batch without any is one Spark job;
2. the points InfluxDB refused, to the dead letters of the query's stream;
3. the records that failed validation (when the first pass counted any), to the dead letters of
   `<job>_dead_letters`;
4. what it saw of these writes, to `pipeline_writes` (`metrics.writes_line`).

No Delta table is written here: bronze and gold are queries of their own (`pipeline`). The batch is kept in memory
while it is written, so its source is read and its state updated once. Every write is idempotent, so a batch
replayed after a crash changes nothing that had landed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pyspark.sql import DataFrame

from streamdash.metrics import write_metric, writes_line
from streamdash.sinks.dead_letter import DeadLetters, invalid_records, refused_points, tally
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.lines import LineSinks
from streamdash.sinks.report import WriteReport
from streamdash.transforms import batch as batch_shape

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MicroBatchWriter:
    stream: str  # the query's name
    windows: LineSinks
    refused: DeadLetters  # stream: the query's name
    invalid: DeadLetters  # stream: `<job>_dead_letters`
    metrics: InfluxWriter | None = None  # `metrics.metrics_writer`; None: no `pipeline_writes` point

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        batch.persist()
        try:
            # One pass: the windows are written and the dead letters counted; without any, none is read again.
            windows = self.windows.write(batch_shape.windows_and_tallies(batch, tally), batch_id)
            windows_written_ns = time.time_ns()
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
            write_metric(self.metrics, writes_line(self.stream, batch_id, windows_written_ns, windows,
                                                   len(windows.rejected), letters.written, blocked_ms), self.stream)
