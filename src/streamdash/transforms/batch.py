"""The dashboards' query's output, and so the shape of every micro-batch its handler gets: the windows and the dead
letters of one read and one parse of each record, in one DataFrame.

- a window row has the columns of `aggregate.windowed_aggregates`, and `DEAD_LETTER` and `parsed` null;
- a dead letter's row has `DEAD_LETTER` (a struct of `parse.DEAD_LETTER_COLUMNS`) and `parsed` (a struct of
  `parse.event_columns`: whatever the parse made of the record), and the window columns null.

`split_once` makes the two branches, `query_output` joins them into the query's one output, and `windows` and
`dead_letters` take a micro-batch apart again in the handler (`sinks.micro_batch`). One query keeps one
checkpoint for both, so a restart replays a batch's windows and its dead letters together.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from streamdash.columns import DEAD_LETTER, PARSED, TALLY
from streamdash.events import DEDUPLICATION_KEY
from streamdash.transforms.parse import dead_letter_columns, evaluated_once, event_columns


def split_once(parsed: DataFrame, watermark: str | None = None,
               key: tuple[str, ...] | None = DEDUPLICATION_KEY) -> tuple[DataFrame, DataFrame]:
    """`parse.valid_events` and the dead letters of a stream, from one read and one parse of each record.

    Both come out of one shuffle by the deduplication `key` (`Contract.deduplication_key`; None, where the contract
    does not deduplicate: `DEDUPLICATION_KEY` all the same), which Spark runs once for both (a reused exchange). For
    that the two must ask the same of it: each filter stays above it (`parse.evaluated_once`), and each branch keeps
    every column it carries, or Spark would prune them below it differently and read and parse the topic twice.
    So the dead letters carry `parsed` too. The `watermark` (a streaming query's) is set below the shuffle: Spark's
    watermark operator does not pass its input's partitioning on, so above it the deduplication would shuffle the
    events once more. Its event-time statistics then count a dead letter's missing time as 1970 (its minimum and
    mean in Spark's progress; the maximum, which moves the watermark, is the events').
    """
    columns = event_columns(parsed)
    letter = F.when(F.col("error").isNotNull(), F.struct(*dead_letter_columns()))
    selected = parsed.select(*columns, letter.alias(DEAD_LETTER))
    if watermark is not None:
        selected = selected.withWatermark("event_time", watermark)
    shuffled = selected.repartition(*(key or DEDUPLICATION_KEY))
    is_letter = F.col(DEAD_LETTER).isNotNull()
    events = shuffled.where(evaluated_once(~is_letter)).select(*columns)
    letters = shuffled.where(evaluated_once(is_letter))
    return events, letters.select(DEAD_LETTER, F.struct(*columns).alias(PARSED))


def query_output(windows: DataFrame, letters: DataFrame) -> DataFrame:
    """The windows, then the dead letters, as one output; each batch's count of dead letters is observed (Spark
    reports it in the batch's progress as `dead_letters`)."""
    counted = letters.observe("dead_letters", F.count_if(F.col(DEAD_LETTER).isNotNull()).alias("dead_letters"))
    return windows.unionByName(counted, allowMissingColumns=True)


def windows_and_tallies(batch: DataFrame, tally: Callable[[Column], Column]) -> DataFrame:
    """A micro-batch's windows and, for each dead letter, `tally` of it (`columns.TALLY`, null on windows):
    what the handler's one pass writes and counts."""
    letter = F.col(DEAD_LETTER)
    return batch.select(*[name for name in batch.columns if name not in (DEAD_LETTER, PARSED)],
                        F.when(letter.isNotNull(), tally(letter)).alias(TALLY))


def dead_letters(batch: DataFrame) -> DataFrame:
    """A micro-batch's invalid records, as `parse.DEAD_LETTER_COLUMNS`."""
    return batch.where(F.col(DEAD_LETTER).isNotNull()).select(f"{DEAD_LETTER}.*")
