"""The query's output, and so the shape of every micro-batch its handler gets: the windows and the dead letters of
one read and one parse of each record, in one DataFrame.

- a window row has the columns of `aggregate.windowed_aggregates`, and `DEAD_LETTER`, `RECORD` and `parsed` null;
- a record row has `DEAD_LETTER` (a struct of `parse.DEAD_LETTER_COLUMNS`; null for a valid record), `parsed` (a
  struct of `parse.event_columns`: whatever the parse made of the record) and, when the records are kept for the
  bronze table, `RECORD` (a struct of `RECORD_COLUMNS`), and the window columns null. Without the bronze table only
  the dead letters are record rows.

`split_once` makes the two branches, `query_output` joins them into the query's one output, and `windows` and
`dead_letters` take a micro-batch apart again in the handler (`sinks.micro_batch`). One query keeps one
checkpoint for both, so a restart replays a batch's windows and its dead letters together.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from streamdash.columns import DEAD_LETTER, READ_AT, RECORD, TALLY
from streamdash.events import DEDUPLICATION_KEY
from streamdash.transforms.parse import dead_letter_columns, evaluated_once, event_columns

# A raw record as the bronze table keeps it: where it was, what it said, when the job read it (the batch's time,
# which the parse judged its event time against) and why it was a dead letter (null: it was valid).
RECORD_COLUMNS = ("key", "value", "topic", "partition", "offset", "kafka_timestamp", "kafka_timestamp_type",
                  READ_AT, "reason")


def split_once(parsed: DataFrame, keep_records: bool = False, watermark: str | None = None
               ) -> tuple[DataFrame, DataFrame]:
    """`parse.valid_events` and the dead letters (with `keep_records`: every record, and `parsed` has the time each
    was read as `columns.READ_AT`) of a stream, from one read and one parse of each record.

    Both come out of one shuffle by `DEDUPLICATION_KEY`, which Spark runs once for both (a reused exchange). For
    that the two must ask the same of it: each filter stays above it (`parse.evaluated_once`), and each branch keeps
    every column it carries, or Spark would prune them below it differently and read and parse the topic twice.
    So the dead letters carry `parsed` too. The `watermark` (a streaming query's) is set below the shuffle: Spark's
    watermark operator does not pass its input's partitioning on, so above it the deduplication would shuffle the
    events once more. Its event-time statistics then count a dead letter's missing time as 1970 (its minimum and
    mean in Spark's progress; the maximum, which moves the watermark, is the events').
    """
    columns = event_columns(parsed)
    letter = F.when(F.col("error").isNotNull(), F.struct(*dead_letter_columns()))
    kept = []
    if keep_records:  # evaluated_once: a struct Spark cannot prove non-null, so the events' filter keeps it too
        fields = {"key": F.col("key") if "key" in parsed.columns else F.lit(None).cast("string"),
                  "reason": F.col("error")}
        kept = [evaluated_once(F.struct(*[fields.get(name, F.col(name)).alias(name) for name in RECORD_COLUMNS]))
                .alias(RECORD)]
    selected = parsed.select(*columns, letter.alias(DEAD_LETTER), *kept)
    if watermark is not None:
        selected = selected.withWatermark("event_time", watermark)
    shuffled = selected.repartition(*DEDUPLICATION_KEY)
    is_letter = F.col(DEAD_LETTER).isNotNull()
    is_record = F.col(RECORD).isNotNull() if keep_records else F.lit(True)
    events = shuffled.where(evaluated_once(~is_letter & is_record)).select(*columns)
    records = shuffled.where(evaluated_once(is_record if keep_records else is_letter))
    return events, records.select(DEAD_LETTER, *([RECORD] if keep_records else []), F.struct(*columns).alias("parsed"))


def query_output(windows: DataFrame, records: DataFrame) -> DataFrame:
    """The windows, then the records, as one output; each batch's count of dead letters is observed (Spark reports
    it in the batch's progress as `dead_letters`)."""
    counted = records.observe("dead_letters", F.count_if(F.col(DEAD_LETTER).isNotNull()).alias("dead_letters"))
    return windows.unionByName(counted, allowMissingColumns=True)


def windows(batch: DataFrame) -> DataFrame:
    """A micro-batch's windows (with the record rows' columns null, which no sink reads)."""
    return batch.where(F.col("level").isNotNull())


def windows_and_tallies(batch: DataFrame, tally: Callable[[Column], Column]) -> DataFrame:
    """A micro-batch's windows and, for each dead letter, `tally` of it (`columns.TALLY`, null on windows):
    what the handler's one pass writes and counts."""
    letter = F.col(DEAD_LETTER)
    return (batch.where(F.col("level").isNotNull() | letter.isNotNull())
            .select(*[name for name in batch.columns if name not in (DEAD_LETTER, RECORD, "parsed")],
                    F.when(letter.isNotNull(), tally(letter)).alias(TALLY)))


def records(batch: DataFrame) -> DataFrame:
    """A micro-batch's raw records, valid and invalid, as `RECORD_COLUMNS` (when the query keeps them)."""
    return batch.where(F.col(RECORD).isNotNull()).select(f"{RECORD}.*")


def dead_letters(batch: DataFrame) -> DataFrame:
    """A micro-batch's invalid records, as `parse.DEAD_LETTER_COLUMNS`."""
    return batch.where(F.col(DEAD_LETTER).isNotNull()).select(f"{DEAD_LETTER}.*")
