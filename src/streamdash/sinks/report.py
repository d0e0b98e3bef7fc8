"""What a sink's executors report back to the driver for one micro-batch, and what the driver keeps of each batch's
writes (`BatchWrites`) until the self-metrics listener writes it into that batch's `pipeline_progress` point."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class WriteReport:
    written: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (line, why the sink refused it)
    blocked_s: float = 0.0  # time spent waiting for an unavailable sink

    def merge(self, other: WriteReport) -> WriteReport:
        """Partitions write in parallel, so the batch was blocked as long as its longest-blocked partition."""
        return WriteReport(self.written + other.written, self.rejected + other.rejected,
                           max(self.blocked_s, other.blocked_s))


@dataclass(frozen=True)
class BatchWrites:
    """What the job's handler saw of a micro-batch's writes and Spark's progress does not say."""

    windows_written_ns: int  # when the batch's windows had been written (before its dead letters and its commit)
    blocked_ms: int  # how long the writes waited for an unavailable sink


_lock = threading.Lock()
_batches: dict[tuple[str, int], BatchWrites] = {}


def record_batch(stream: str, batch_id: int, writes: BatchWrites) -> None:
    with _lock:
        _batches[(stream, batch_id)] = writes


def pop_batch(stream: str, batch_id: int) -> BatchWrites | None:
    with _lock:
        return _batches.pop((stream, batch_id), None)
