"""Self-metrics: a StreamingQueryListener that writes each query's progress to InfluxDB (`pipeline_progress`).

Fields per micro-batch: batch_id, input_rows, input_rows_per_s, processed_rows_per_s, batch_duration_ms,
rows_dropped_by_watermark, state_rows, offsets_behind_latest (max over partitions, Kafka source), freshness_ms
(batch time minus the newest event time seen) and, for the dead-letter query, dead_letters. Writing metrics
never fails the stream: an error is logged and the next batch tries again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

from pyspark.sql.streaming import StreamingQueryListener

from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.line_protocol import line
from streamdash.sinks.points import PROGRESS_MEASUREMENT

log = logging.getLogger(__name__)


def _epoch_ns(iso: str) -> int:
    parsed = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return int(parsed.timestamp()) * 1_000_000_000 + parsed.microsecond * 1000


def progress_line(progress: dict) -> str | None:
    """A StreamingQueryProgress (as its JSON dict) -> one `pipeline_progress` point."""
    timestamp_ns = _epoch_ns(progress["timestamp"])
    fields: dict[str, object] = {
        "batch_id": int(progress["batchId"]),
        "input_rows": int(progress.get("numInputRows", 0)),
        "input_rows_per_s": float(progress.get("inputRowsPerSecond") or 0.0),
        "processed_rows_per_s": float(progress.get("processedRowsPerSecond") or 0.0),
        "batch_duration_ms": int(progress.get("batchDuration", 0)),
        "rows_dropped_by_watermark": sum(int(op.get("numRowsDroppedByWatermark", 0))
                                         for op in progress.get("stateOperators", [])),
        "state_rows": sum(int(op.get("numRowsTotal", 0)) for op in progress.get("stateOperators", [])),
    }
    behind = [int(source["metrics"]["maxOffsetsBehindLatest"]) for source in progress.get("sources", [])
              if (source.get("metrics") or {}).get("maxOffsetsBehindLatest") is not None]
    if behind:
        fields["offsets_behind_latest"] = max(behind)
    newest_event = (progress.get("eventTime") or {}).get("max")
    if newest_event:
        fields["freshness_ms"] = (timestamp_ns - _epoch_ns(newest_event)) // 1_000_000
    for name, metric_row in (progress.get("observedMetrics") or {}).items():
        for key, value in (metric_row or {}).items():
            if isinstance(value, int | float):
                fields[f"{name}_{key}" if key != name else name] = value
    return line(PROGRESS_MEASUREMENT, {"stream": progress.get("name") or "unnamed"}, fields, timestamp_ns)


class InfluxProgressListener(StreamingQueryListener):
    def __init__(self, writer: InfluxWriter):
        self.writer = writer

    def onQueryStarted(self, event) -> None:
        log.info("query %s started (id %s)", event.name, event.id)

    def onQueryProgress(self, event) -> None:
        progress = event.progress
        log.info("%s batch %d: %d rows, %.0f rows/s, %d ms", progress.name, progress.batchId, progress.numInputRows,
                 progress.processedRowsPerSecond, progress.batchDuration)
        try:
            self.writer.write_lines([progress_line(json.loads(event.progress.json))])
        except Exception as err:  # noqa: BLE001 - metrics must never stop the pipeline
            log.warning("could not write self-metrics for batch %s: %s", event.progress.batchId, err)

    def onQueryTerminated(self, event) -> None:
        if event.exception:
            log.error("query %s failed: %s", event.id, event.exception)
