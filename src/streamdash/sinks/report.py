"""What a sink's executors report back to the driver for one micro-batch, and where the driver keeps the time
writes were blocked until the self-metrics listener writes it into that batch's `pipeline_progress` point."""

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


_lock = threading.Lock()
_blocked_ms: dict[tuple[str, int], int] = {}


def record_blocked(stream: str, batch_id: int, blocked_s: float) -> None:
    with _lock:
        _blocked_ms[(stream, batch_id)] = round(blocked_s * 1000)


def pop_blocked_ms(stream: str, batch_id: int) -> int | None:
    with _lock:
        return _blocked_ms.pop((stream, batch_id), None)
