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
    # The dead letters the same pass saw (`dead_letter.tally`), by reason: {"count", "json_bytes"}.
    dead_letters: dict[str, dict] = field(default_factory=dict)

    def merge(self, other: WriteReport) -> WriteReport:
        """Partitions write in parallel, so the batch was blocked as long as its longest-blocked partition."""
        newest = [t for t in (self.newest_event_ns, other.newest_event_ns) if t is not None]
        return WriteReport(self.written + other.written, self.rejected + other.rejected,
                           max(self.blocked_s, other.blocked_s), max(newest, default=None),
                           merge_tallies(self.dead_letters, other.dead_letters))


def add_to_tally(tallies: dict[str, dict], reason: str, count: int, json_bytes: int) -> None:
    """Count dead letters of `reason` into {reason: {"count", "json_bytes"}}, in place."""
    tally = tallies.setdefault(reason, {"count": 0, "json_bytes": 0})
    tally["count"] += count
    tally["json_bytes"] += json_bytes


def merge_tallies(one: dict[str, dict], other: dict[str, dict]) -> dict[str, dict]:
    """Two {reason: {"count", "json_bytes"}} as one."""
    merged = {reason: dict(tally) for reason, tally in one.items()}
    for reason, tally in other.items():
        add_to_tally(merged, reason, **tally)
    return merged


class BatchSink(Protocol):
    """Where one kind of row of a micro-batch goes: the windows (`lines.LineSinks`: InfluxDB, then Grafana Live)
    or the dead letters (`dead_letter.DeadLetters`). Called on the driver from the query's handler."""

    def write(self, rows: DataFrame, batch_id: int) -> WriteReport:
        """Write `rows` of batch `batch_id` so that writing the same batch again changes nothing."""
        ...
