"""The interface every line-protocol sink shares, and the executor-side loop that feeds a query's sinks.

A batch's rows become one line of line protocol each on the executor that holds the row; the same lines go to
each sink in order: InfluxDB first (the record), then Grafana Live (a view) when configured. Each sink reports
what it wrote, what it refused and how long it was blocked (`WriteReport`); the handler decides what a refusal
means (InfluxDB's become dead letters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial, reduce
from typing import TYPE_CHECKING, Any, Protocol

from pyspark.sql import DataFrame

from streamdash.columns import TALLY  # a row's dead-letter tally (`dead_letter.tally`), null on rows to write
from streamdash.sinks.report import WriteReport, add_to_tally

if TYPE_CHECKING:
    from streamdash.limits import LiveLimits


class LineSink(Protocol):
    """A destination for line protocol, written from the executors (so it must be plain, picklable values)."""

    def write_lines(self, lines: list[str | None]) -> WriteReport:
        """Write what it takes of `lines` (None marks a row with nothing to write); never drop silently."""
        ...


def write_partition(to_line: Callable[[dict], str | None], sinks: Sequence[LineSink], rows: Iterable[Any], *,
                    more_lines: Callable[[dict], list[str]] | None = None) -> Iterator[list[WriteReport]]:
    """`mapPartitions` body: rows -> lines -> each sink in order; yields one report per sink for the driver, each
    with the newest `newest_event_ns` among the rows. A row whose `TALLY` column is set is a dead letter: it is
    counted into the reports' `dead_letters`, not written, so that one pass over a batch serves both."""
    dicts, tallies = [], {}
    for row in rows:
        letter = row[TALLY] if TALLY in row.__fields__ else None
        if letter is None:
            dicts.append(row.asDict(recursive=True))
        else:
            add_to_tally(tallies, letter["reason"], 1, letter["json_bytes"])
    lines = [to_line(row) for row in dicts]
    if more_lines is not None:  # such as each device window judged against its limits (`streamdash.limits`)
        lines += [extra for row in dicts for extra in more_lines(row)]
    newest = max((row["newest_event_ns"] for row in dicts if row.get("newest_event_ns") is not None), default=None)
    reports = [sink.write_lines(lines) for sink in sinks]
    for report in reports:
        report.newest_event_ns, report.dead_letters = newest, tallies
    yield reports


def write_rows(batch: Any, to_line: Callable[[dict], str | None], sinks: Sequence[LineSink],
               more_lines: Callable[[dict], list[str]] | None = None) -> list[WriteReport]:
    """Write every row of a DataFrame to `sinks` from the executors; one report per sink, partitions merged."""
    per_partition = batch.rdd.mapPartitions(partial(write_partition, to_line, tuple(sinks),
                                                    more_lines=more_lines)).collect()
    return [reduce(WriteReport.merge, (reports[i] for reports in per_partition), WriteReport())
            for i in range(len(sinks))]


@dataclass(frozen=True)
class LineSinks:
    """A `BatchSink`: rows -> lines -> the record (the first sink), then its views. Reports the record's write."""

    to_line: Callable[[dict], str | None]
    record: LineSink
    views: tuple[LineSink, ...] = ()
    limits: LiveLimits | None = None  # each device window judged against its limits, written beside it

    def write(self, rows: DataFrame, batch_id: int) -> WriteReport:
        judged = self.limits.lines() if self.limits else None
        return write_rows(rows, self.to_line, [self.record, *self.views], judged)[0]
