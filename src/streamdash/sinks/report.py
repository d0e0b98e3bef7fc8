"""What a sink reports of one write, and the interface every sink of a micro-batch shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pyspark.sql import DataFrame


@dataclass
class WriteReport:
    written: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (line, why the sink refused it)
    blocked_s: float = 0.0  # time spent waiting for an unavailable sink
    newest_event_ns: int | None = None  # the newest event time among the rows written, when they carry one

    def merge(self, other: WriteReport) -> WriteReport:
        """Partitions write in parallel, so the batch was blocked as long as its longest-blocked partition."""
        newest = [t for t in (self.newest_event_ns, other.newest_event_ns) if t is not None]
        return WriteReport(self.written + other.written, self.rejected + other.rejected,
                           max(self.blocked_s, other.blocked_s), max(newest, default=None))


class BatchSink(Protocol):
    """Where one kind of row of a micro-batch goes: the windows (`lines.LineSinks`: InfluxDB, then Grafana Live)
    or the dead letters (`dead_letter.DeadLetters`). Called on the driver from the query's handler."""

    def write(self, rows: DataFrame, batch_id: int) -> WriteReport:
        """Write `rows` of batch `batch_id` so that writing the same batch again changes nothing."""
        ...
