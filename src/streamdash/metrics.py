"""Self-metrics in InfluxDB: what Spark reports of each micro-batch (`pipeline_progress`, written by a
StreamingQueryListener) and what the query's handler saw of its writes (`pipeline_writes`, written by the handler
itself, wherever `foreachBatch` runs).

`pipeline_progress` (tag stream, time: the batch's start): batch_id, input_rows, input_rows_per_s,
processed_rows_per_s, batch_duration_ms, rows_dropped_by_watermark, duplicates_dropped (re-deliveries counted once),
state_rows, offsets_behind_latest (max over partitions, Kafka source), dead_letters (records that failed
validation), where the batch's time went (`<phase>_ms` for each of Spark's `durationMs` phases, such as
add_batch_ms and query_planning_ms; state_updates_ms, state_removals_ms and state_commit_ms summed over the state
operators), with `validation.early_events = "adjust"` early_events_adjusted, and with `contract.bad_values =
"drop_value"` dropped_values_<reason> (values left out of valid records), with `contract.readings.unknown =
"ignore"` ignored_readings (long records' readings no measurement names).

`pipeline_writes` (tag stream, time: when the batch's windows had been written, before its dead letters and its
commit): batch_id, points_written, points_refused (dead-lettered as `sink_rejected`), dead_letters_written,
freshness_ms (how old the newest event among the windows was then; never negative, so an event stamped ahead of the
clock counts as 0) and sink_blocked_ms (how long the writes waited for an unavailable InfluxDB; only when they did).

Writing metrics never fails or holds up the stream: the listener keeps its points while InfluxDB is unavailable (up
to `MAX_PENDING`) and writes them with the next batch's; the handler's point is written once, with one quick retry.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import time
from dataclasses import replace

from pyspark import SparkContext
from pyspark.sql.streaming import StreamingQueryListener
from pyspark.sql.streaming.listener import JStreamingQueryListener, QueryProgressEvent

from streamdash.sinks.influxdb import InfluxWriter
from streamdash.sinks.line_protocol import line
from streamdash.sinks.points import PROGRESS_MEASUREMENT, WRITES_MEASUREMENT
from streamdash.sinks.report import WriteReport
from streamdash.sinks.retry import RetryPolicy

log = logging.getLogger(__name__)


def epoch_ns(iso: str) -> int:
    """Spark's ISO-8601 progress times -> nanoseconds since 1970, to the microsecond."""
    parsed = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return int(parsed.timestamp()) * 1_000_000_000 + parsed.microsecond * 1000


def metrics_writer(writer: InfluxWriter) -> InfluxWriter:
    """`writer` with one quick retry and a short timeout: metrics must never hold up the stream for long."""
    return replace(writer, retry=RetryPolicy(0.2, 1.0, max_retries=1), timeout_s=min(writer.timeout_s, 5.0))


def writes_line(stream: str, batch_id: int, windows_written_ns: int, windows: WriteReport, refused: int,
                dead_letters: int, blocked_ms: int) -> str | None:
    """What the handler saw of one micro-batch's writes -> one `pipeline_writes` point."""
    fields: dict[str, object] = {"batch_id": batch_id, "points_written": windows.written, "points_refused": refused,
                                 "dead_letters_written": dead_letters}
    if windows.newest_event_ns is not None:
        fields["freshness_ms"] = max(0, (windows_written_ns - windows.newest_event_ns) // 1_000_000)
    if blocked_ms:
        fields["sink_blocked_ms"] = blocked_ms
    return line(WRITES_MEASUREMENT, {"stream": stream}, fields, windows_written_ns)


def gold_line(stream: str, batch_id: int, merged: int, late_for_dashboards: int) -> str | None:
    """What the gold query merged of one micro-batch -> one `pipeline_writes` point (time: now)."""
    return line(WRITES_MEASUREMENT, {"stream": stream}, {"batch_id": batch_id, "windows_merged": merged,
                                                         "windows_late_for_dashboards": late_for_dashboards},
                time.time_ns())


def write_metric(writer: InfluxWriter, point: str | None, stream: str) -> None:
    """Write one self-metrics point; a failure is a warning, never the pipeline's."""
    try:
        report = writer.write_lines([point])
    except Exception as err:  # noqa: BLE001 - metrics must never stop the pipeline
        log.warning("could not write %s's pipeline_writes point: %s", stream, err)
        return
    for refused, why in report.rejected:
        log.warning("InfluxDB refused a self-metrics point (%s): %s", why, refused)


# Where a batch's stateful work went, summed over its state operators: pipeline_progress field -> Spark's name.
STATE_TIMES = {"state_updates_ms": "allUpdatesTimeMs", "state_removals_ms": "allRemovalsTimeMs",
               "state_commit_ms": "commitTimeMs"}


def _snake(name: str) -> str:
    """Spark's camelCase phase names (`addBatch`, `queryPlanning`) as field names (`add_batch`, `query_planning`)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def progress_line(progress: dict) -> str | None:
    """A StreamingQueryProgress (as its JSON dict) -> one `pipeline_progress` point."""
    timestamp_ns = epoch_ns(progress["timestamp"])
    fields: dict[str, object] = {
        "batch_id": int(progress["batchId"]),
        "input_rows": int(progress.get("numInputRows", 0)),
        "input_rows_per_s": float(progress.get("inputRowsPerSecond") or 0.0),
        "processed_rows_per_s": float(progress.get("processedRowsPerSecond") or 0.0),
        "batch_duration_ms": int(progress.get("batchDuration", 0)),
        "rows_dropped_by_watermark": sum(int(op.get("numRowsDroppedByWatermark", 0))
                                         for op in progress.get("stateOperators", [])),
        "duplicates_dropped": sum(int((op.get("customMetrics") or {}).get("numDroppedDuplicateRows", 0))
                                  for op in progress.get("stateOperators", [])),
        "state_rows": sum(int(op.get("numRowsTotal", 0)) for op in progress.get("stateOperators", [])),
        **{f"{_snake(phase)}_ms": int(ms) for phase, ms in (progress.get("durationMs") or {}).items()},
        **{name: sum(int(op.get(key, 0)) for op in progress.get("stateOperators", []))
           for name, key in STATE_TIMES.items()},
    }
    behind = [int(source["metrics"]["maxOffsetsBehindLatest"]) for source in progress.get("sources", [])
              if (source.get("metrics") or {}).get("maxOffsetsBehindLatest") is not None]
    if behind:
        fields["offsets_behind_latest"] = max(behind)
    for name, metric_row in (progress.get("observedMetrics") or {}).items():
        for key, value in (metric_row or {}).items():
            if isinstance(value, int | float):
                fields[f"{name}_{key}" if key != name else name] = value
    return line(PROGRESS_MEASUREMENT, {"stream": progress.get("name") or "unnamed"}, fields, timestamp_ns)


MAX_PENDING = 10_000


class _ProgressAsJson(JStreamingQueryListener):
    """PySpark's bridge builds each progress event field by field, one py4j round trip per field (about a hundred
    per event, on the listener bus and the driver's GIL); the event's JSON is one."""

    def onQueryProgress(self, jevent) -> None:
        self.pylistener.onQueryProgress(QueryProgressEvent.fromJson(json.loads(jevent.json())))


class InfluxProgressListener(StreamingQueryListener):
    def __init__(self, writer: InfluxWriter):
        self.writer = metrics_writer(writer)  # the listener must never hold up the progress events for long
        self.pending: list[str] = []
        self.terminated: set[str] = set()  # ids of the queries whose end this listener has been told of
        self._changed = threading.Condition()

    @property
    def _jlistener(self):
        """The JVM side of this listener (what `spark.streams.addListener` registers), fed by `_ProgressAsJson`."""
        if not hasattr(self, "_jlistenerobj"):
            self._jlistenerobj = SparkContext._jvm.PythonStreamingQueryListenerWrapper(_ProgressAsJson(self))
        return self._jlistenerobj

    def wait_terminated(self, query_ids: set[str], timeout_s: float) -> bool:
        """Wait until the listener bus has delivered the end of every query in `query_ids` (the bus is
        asynchronous: detaching the listener earlier would leave a callback in flight while Python exits)."""
        with self._changed:
            return self._changed.wait_for(lambda: query_ids <= self.terminated, timeout_s)

    def onQueryStarted(self, event) -> None:
        log.info("query %s started (id %s)", event.name, event.id)

    def onQueryProgress(self, event) -> None:
        progress = event.progress
        # A rate Spark cannot compute (no processing time) is left out of the JSON: None here.
        log.info("%s batch %d: %d rows, %.0f rows/s, %d ms", progress.name, progress.batchId, progress.numInputRows,
                 progress.processedRowsPerSecond or 0.0, progress.batchDuration)
        point = progress_line(json.loads(progress.json))
        self.pending = [*self.pending, point][-MAX_PENDING:]
        try:
            report = self.writer.write_lines(self.pending)
        except Exception as err:  # noqa: BLE001 - metrics must never stop the pipeline
            log.warning("could not write self-metrics for batch %s (%d points kept for the next try): %s",
                        progress.batchId, len(self.pending), err)
            return
        self.pending = []
        for refused, why in report.rejected:
            log.warning("InfluxDB refused a self-metrics point (%s): %s", why, refused)

    def onQueryTerminated(self, event) -> None:
        if event.exception:
            log.error("query %s failed: %s", event.id, event.exception)
        with self._changed:
            self.terminated.add(str(event.id))
            self._changed.notify_all()
