"""Which checkpoints this version can continue from. A checkpoint holds the query's offsets and its aggregation
state; state written under another layout cannot be read back, so such a checkpoint is refused at start, in one
line that names it, instead of failing deep inside Spark or counting records twice."""

from __future__ import annotations

import json

from pyspark.sql import SparkSession

from streamdash.errors import StreamdashError
from streamdash.events import DEDUPLICATION_KEY
from streamdash.storage import file_system, hadoop_path, read_text, write_text

STATE_LAYOUT_FILE = "state_layout.json"
CARRY_OVER_FOLDER = "carry_over"  # what a contract change carried over still has to recompute (`carry_over`)
GOLD_COUNTED_UNTIL_FILE = "counted_until.json"
_START_OVER = ("Set job.checkpoint_location to a new folder (the job then starts from source.starting_offsets), or "
               "delete {checkpoint} to start over")


def check_checkpoint(spark: SparkSession, checkpoint: str, layout: dict) -> None:
    """Refuse a checkpoint this version cannot continue; record `layout` (see
    `transforms.aggregate.state_layout`) in a new one.

    Earlier layouts ran more queries: one per window size before 0.2 (`aggregates_<size>` folders), and the dead
    letters in their own query before 0.3 (`dead_letters`); their state and offsets cannot be carried into the
    single query (it would count some records twice, or never dead-letter those the old query had not reached).
    Up to 0.3 the deduplication state was keyed by (device_id, seq) alone, with no `STATE_LAYOUT_FILE`."""
    fs = file_system(spark, checkpoint)
    start_over = _START_OVER.format(checkpoint=checkpoint)
    found = [status for pattern in ("aggregates_*", "dead_letters")
             for status in fs.globStatus(hadoop_path(spark, f"{checkpoint}/{pattern}")) or []]
    if found:
        raise StreamdashError(
            f"{checkpoint} holds checkpoints of an earlier query layout ({found[0].getPath().getName()}); this "
            f"version reads, aggregates and dead-letters in one query and cannot continue from them. {start_over}")
    changed = layout_changes(spark, checkpoint, layout)
    if changed:
        raise StreamdashError(f"{checkpoint} holds aggregation state of another layout (it differs in "
                              f"{', '.join(changed)}); this configuration cannot continue from it. {start_over}, "
                              "or carry the running deployment over to the new contract: "
                              "job.on_contract_change = \"carry_over\" (docs/operations.md)")
    if changed is None:  # no layout recorded: a new checkpoint, or one of 0.3 or earlier
        if fs.exists(hadoop_path(spark, f"{checkpoint}/aggregates")):
            raise StreamdashError(
                f"{checkpoint} holds the state of streamdash 0.3 or earlier, whose deduplication was keyed by "
                f"(device_id, seq) alone; this version keys it by ({', '.join(DEDUPLICATION_KEY)}). {start_over}")
        write_text(spark, f"{checkpoint}/{STATE_LAYOUT_FILE}", json.dumps(layout, sort_keys=True))


def layout_changes(spark: SparkSession, checkpoint: str, layout: dict) -> list[str] | None:
    """What differs between `layout` and the one recorded under `checkpoint` (None: none recorded)."""
    text = read_text(spark, f"{checkpoint}/{STATE_LAYOUT_FILE}")
    if text is None:
        return None
    recorded = json.loads(text)
    return sorted(key for key in {*recorded, *layout} if recorded.get(key) != layout.get(key))


def carried_over(spark: SparkSession, checkpoint: str) -> dict[str, dict]:
    """What a contract change carried over (`carry_over`) still has to recompute, by query."""
    folder = f"{checkpoint}/{CARRY_OVER_FOLDER}"
    fs = file_system(spark, folder)
    if not fs.exists(hadoop_path(spark, folder)):
        return {}
    return {status.getPath().getName().removesuffix(".json"): json.loads(read_text(spark, str(status.getPath())))
            for status in fs.listStatus(hadoop_path(spark, folder)) if status.getPath().getName().endswith(".json")}


def gold_counted_until_ms(spark: SparkSession, gold_checkpoint: str) -> int:
    """Up to which watermark an earlier gold query, before a contract change, counted the windows late for the
    dashboards (0: none)."""
    text = read_text(spark, f"{gold_checkpoint}/{GOLD_COUNTED_UNTIL_FILE}")
    return 0 if text is None else int(json.loads(text)["watermark_ms"])


def query_id(spark: SparkSession, query_checkpoint: str) -> str:
    """The id Spark gave the query whose checkpoint this is (its `metadata` file): the same across restarts, another
    for a new checkpoint. Delta's idempotent writes key on it, so a new checkpoint's batch 0 is not taken for a
    replay of the old one's."""
    text = read_text(spark, f"{query_checkpoint.rstrip('/')}/metadata")
    if text is None:
        raise StreamdashError(f"{query_checkpoint} has no metadata: the query has not started from it")
    return json.loads(text.splitlines()[0])["id"]


def _batch_ids(spark: SparkSession, folder: str) -> list[int]:
    fs = file_system(spark, folder)
    path = hadoop_path(spark, folder)
    if not fs.exists(path):
        return []
    return [int(status.getPath().getName()) for status in fs.listStatus(path) if status.getPath().getName().isdigit()]


def uncommitted_batch(spark: SparkSession, query_checkpoint: str) -> int | None:
    """The batch whose offsets the query has logged but not committed: the one it is running (or, after a crash,
    the one it will run again first); None when every logged batch is committed."""
    root = query_checkpoint.rstrip("/")
    newest = max(_batch_ids(spark, f"{root}/offsets"), default=None)
    return newest if newest is not None and newest > max(_batch_ids(spark, f"{root}/commits"), default=-1) else None


def is_committed(spark: SparkSession, query_checkpoint: str, batch_id: int) -> bool:
    fs = file_system(spark, query_checkpoint)
    return fs.exists(hadoop_path(spark, f"{query_checkpoint.rstrip('/')}/commits/{batch_id}"))


def committed_source_offsets(spark: SparkSession, query_checkpoint: str) -> str | None:
    """Where the query's source stands after its last committed batch (the source's own JSON, such as the Kafka
    source's `{"topic": {"0": 42}}`), or None before its first commit. Another query starts there to read on
    exactly from it (`pipeline.bronze_starter`)."""
    committed = last_committed_batch(spark, query_checkpoint)
    text = None if committed is None else read_text(spark, f"{query_checkpoint.rstrip('/')}/offsets/{committed}")
    return None if text is None else text.splitlines()[2]


def last_committed_batch(spark: SparkSession, query_checkpoint: str) -> int | None:
    return max(_batch_ids(spark, f"{query_checkpoint.rstrip('/')}/commits"), default=None)


def batch_time_ms(spark: SparkSession, query_checkpoint: str, batch_id: int) -> int:
    """When the query planned batch `batch_id` (its offset log's `batchTimestampMs`: the job's clock, the same on a
    replay of the batch)."""
    return int(_batch_metadata(spark, query_checkpoint, batch_id)["batchTimestampMs"])


def next_watermark_ms(spark: SparkSession, query_checkpoint: str) -> int | None:
    """The watermark the query's last commit set for its next batch (its commit log's `nextBatchWatermarkMs`), or
    None before its first commit."""
    committed = last_committed_batch(spark, query_checkpoint)
    text = None if committed is None else read_text(spark, f"{query_checkpoint.rstrip('/')}/commits/{committed}")
    return None if text is None else int(json.loads(text.splitlines()[1])["nextBatchWatermarkMs"])


def batch_watermark_ms(spark: SparkSession, query_checkpoint: str, batch_id: int) -> int:
    """The event-time watermark batch `batch_id` ran with (0: none yet)."""
    return int(_batch_metadata(spark, query_checkpoint, batch_id)["batchWatermarkMs"])


def _batch_metadata(spark: SparkSession, query_checkpoint: str, batch_id: int) -> dict:
    text = read_text(spark, f"{query_checkpoint.rstrip('/')}/offsets/{batch_id}")
    if text is None:
        raise StreamdashError(f"{query_checkpoint} has no offsets for batch {batch_id}")
    return json.loads(text.splitlines()[1])
