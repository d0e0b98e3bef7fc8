"""The interface every line-protocol sink shares, and the executor-side loop that feeds a query's sinks.

A query's handler turns each row of its micro-batch into one line of line protocol on the executor that holds
the row, then hands the same lines to each of the query's sinks in order: InfluxDB first (the record), then
Grafana Live (a view) when configured. Each sink reports what it wrote, what it refused and how long it was
blocked (`WriteReport`); the job decides what a refusal means (InfluxDB's become dead letters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial, reduce
from typing import Any, Protocol

from streamdash.sinks.report import WriteReport


class LineSink(Protocol):
    """A destination for line protocol, written from the executors (so it must be plain, picklable values)."""

    def write_lines(self, lines: list[str | None]) -> WriteReport:
        """Write what it takes of `lines` (None marks a row with nothing to write); never drop silently."""
        ...


def write_partition(to_line: Callable[[dict], str | None], sinks: Sequence[LineSink],
                    rows: Iterable[Any]) -> Iterator[list[WriteReport]]:
    """`mapPartitions` body: rows -> lines -> each sink in order; yields one report per sink for the driver."""
    lines = [to_line(row.asDict(recursive=True)) for row in rows]
    yield [sink.write_lines(lines) for sink in sinks]


def write_rows(batch: Any, to_line: Callable[[dict], str | None], sinks: Sequence[LineSink]) -> list[WriteReport]:
    """Write every row of a DataFrame to `sinks` from the executors; one report per sink, partitions merged."""
    per_partition = batch.rdd.mapPartitions(partial(write_partition, to_line, tuple(sinks))).collect()
    return [reduce(WriteReport.merge, (reports[i] for reports in per_partition), WriteReport())
            for i in range(len(sinks))]
