"""A contract changed on a running deployment (`job.on_contract_change = "carry_over"`). The aggregation state in
the checkpoint cannot be read under the new contract, and neither a new checkpoint from `earliest` (every record,
dead letter and counter again) nor from `latest` (the records in between never read) keeps the pipeline's word.
So, at start:

- **dashboards**: a new checkpoint that starts where the old one had committed, at the watermark that commit set.
  Its offset log holds one uncommitted batch ending at the old committed offsets, with that watermark, and the
  Kafka source's initial offsets are the same offsets: Spark runs it as an empty batch and goes on from there with
  the old watermark. No record is read twice (no dead letter or counter is made again) or skipped, and a late
  event stays late, so no closed window is overwritten. The windows still open then (ending after that watermark)
  hold records of both states: once the new state has closed them (its watermark past the newest event time read
  before the change could be, `validation.max_event_time_ahead` after it, plus the largest window) and bronze holds
  all the dashboards have read, they are recomputed from bronze into InfluxDB by the backfill (`Recompute`);
- **gold** is rebuilt from bronze under the new contract (its merge on the window's identity overwrites, so nothing
  is doubled; the new measurement or statistic gains bronze's whole history). Its `windows_late_for_dashboards`
  counts only windows past where the old gold had counted;
- **bronze** keeps its checkpoint: it holds records as read, whatever the contract.

The old checkpoints are kept under `previous/<time of the change>/`; the recompute still due is in `carry_over/`
until done, so a restart goes on with it."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time

from pyspark.sql import SparkSession

from streamdash.backfill import backfill
from streamdash.checkpoint import (
    CARRY_OVER_FOLDER,
    GOLD_COUNTED_UNTIL_FILE,
    STATE_LAYOUT_FILE,
    carried_over,
    committed_source_offsets,
    gold_counted_until_ms,
    last_committed_batch,
    next_watermark_ms,
    uncommitted_batch,
)
from streamdash.config import Settings, duration_seconds
from streamdash.errors import StreamdashError
from streamdash.pipeline import checkpoint_of, selected_queries
from streamdash.storage import file_system, hadoop_path, read_text, write_text

log = logging.getLogger("streamdash.carry_over")
KAFKA_INITIAL_OFFSETS = "sources/0/0"  # the Kafka source's file: a zero byte (Spark 2.1's format), "v1", the JSON


def carry_over(spark: SparkSession, settings: Settings, layout: dict, changed: list[str]) -> None:
    """Set the checkpoints up for the new contract, whose state has `layout` (`changed`: what differs), as above."""
    root = settings.job.checkpoint_location.rstrip("/")
    if carried_over(spark, root):
        raise StreamdashError(f"{root}/{CARRY_OVER_FOLDER} holds a contract change whose open windows are not yet "
                              "recomputed: run the job with the contract it was made for until it logs that the "
                              "recompute is done, then change the contract again")
    if committed_source_offsets(spark, checkpoint_of(settings, "bronze")) is None:
        raise StreamdashError(f"job.on_contract_change = \"carry_over\": bronze has committed nothing under {root}, "
                              "so the windows open at the change could not be recomputed. Run bronze with the old "
                              "contract first (job.queries = [\"bronze\"])")
    changed_at = dt.datetime.now(dt.UTC)
    aside = f"{root}/previous/{changed_at:%Y%m%dT%H%M%SZ}"
    file_system(spark, root).mkdirs(hadoop_path(spark, aside))
    dashboards, gold = checkpoint_of(settings, "dashboards"), checkpoint_of(settings, "gold")
    due = _carry_dashboards(spark, dashboards, f"{aside}/{dashboards.rsplit('/', 1)[1]}")
    if due is not None:
        write_text(spark, f"{root}/{CARRY_OVER_FOLDER}/dashboards.json",
                   json.dumps({**due, "changed_at_ms": int(changed_at.timestamp() * 1000)}))
    _set_gold_aside(spark, gold, f"{aside}/{gold.rsplit('/', 1)[1]}")
    _move(spark, f"{root}/{STATE_LAYOUT_FILE}", f"{aside}/{STATE_LAYOUT_FILE}")
    write_text(spark, f"{root}/{STATE_LAYOUT_FILE}", json.dumps(layout, sort_keys=True))
    log.warning("the contract changed (%s): the dashboards go on from their committed offsets%s, gold is rebuilt "
                "from bronze, and the old checkpoints are kept in %s", ", ".join(changed),
                "" if due is None else f" at their watermark ({_moment(due['watermark_ms']).isoformat()}); the "
                "windows open then are recomputed from bronze once closed", aside)


def _carry_dashboards(spark: SparkSession, checkpoint: str, aside: str) -> dict | None:
    """The new checkpoint, and what is due for the windows left open (None: nothing was committed). Everything is
    read before the old checkpoint is moved."""
    if not file_system(spark, checkpoint).exists(hadoop_path(spark, checkpoint)):
        return None
    batch = last_committed_batch(spark, checkpoint)
    initial = read_text(spark, f"{checkpoint}/{KAFKA_INITIAL_OFFSETS}")
    if batch is None:  # nothing committed: start again from the same initial offsets
        _move(spark, checkpoint, aside)
        if initial is not None:
            write_text(spark, f"{checkpoint}/{KAFKA_INITIAL_OFFSETS}", initial)
        return None
    # The offset log's version line, the batch's metadata, then one line per source of the plan (the Kafka source
    # once for each branch that reads it).
    version, metadata, *offsets = read_text(spark, f"{checkpoint}/offsets/{batch}").splitlines()
    watermark_ms = next_watermark_ms(spark, checkpoint)
    if (unfinished := uncommitted_batch(spark, checkpoint)) is not None:
        log.warning("%s: batch %d had not committed; its records are read again under the new contract, and the dead "
                    "letters it may have written before it stopped are written again", checkpoint, unfinished)
    _move(spark, checkpoint, aside)
    write_text(spark, f"{checkpoint}/offsets/0",
               "\n".join([version, json.dumps({**json.loads(metadata), "batchWatermarkMs": watermark_ms}), *offsets]))
    write_text(spark, f"{checkpoint}/{KAFKA_INITIAL_OFFSETS}", f"\0v1\n{offsets[0]}")
    return {"watermark_ms": watermark_ms}


def _set_gold_aside(spark: SparkSession, checkpoint: str, aside: str) -> None:
    if not file_system(spark, checkpoint).exists(hadoop_path(spark, checkpoint)):
        return
    counted_until = max(next_watermark_ms(spark, checkpoint) or 0, gold_counted_until_ms(spark, checkpoint))
    _move(spark, checkpoint, aside)
    if counted_until:
        write_text(spark, f"{checkpoint}/{GOLD_COUNTED_UNTIL_FILE}", json.dumps({"watermark_ms": counted_until}))


def _move(spark: SparkSession, source: str, target: str) -> None:
    fs = file_system(spark, source)
    if fs.exists(hadoop_path(spark, source)) and not fs.rename(hadoop_path(spark, source), hadoop_path(spark, target)):
        raise StreamdashError(f"could not move {source} to {target}")


class Recompute:
    """The windows a carried-over change left open, recomputed from bronze into InfluxDB once the dashboards' new
    state has closed them and bronze holds what the dashboards read; `step()` at each turn of the job's loop. A
    failed or stopped recompute is tried again (it writes the same windows). What is due is read once, at start:
    only the carry-over at start makes it."""

    RETRY_S = 60.0

    def __init__(self, spark: SparkSession, settings: Settings, stop: threading.Event):
        self.spark, self.settings, self.stop = spark, settings, stop
        self.root = settings.job.checkpoint_location.rstrip("/")
        self.due = (carried_over(self.spark, self.root).get("dashboards")
                    if "dashboards" in selected_queries(settings) else None)
        self.next_try = 0.0

    def step(self) -> None:
        due = self.due
        if due is None or time.monotonic() < self.next_try:
            return
        settings = self.settings
        largest_ms = int(max(map(duration_seconds, settings.aggregation.window_sizes)) * 1000)
        # The newest event time a record read before the change could have (`validation.max_event_time_ahead`).
        end_ms = due["changed_at_ms"] + int(duration_seconds(settings.validation.max_event_time_ahead) * 1000) + 1
        if not self._ready(due, end_ms + largest_ms):
            return
        try:
            backfill(self.spark, settings, _moment(due["watermark_ms"] - largest_ms), _moment(end_ms),
                     ("influxdb",), ends_after=_moment(due["watermark_ms"]), stop=self.stop)
        except StreamdashError as err:
            if self.stop.is_set():
                log.info("the recompute of the windows open at the contract change is left to the next start")
                return
            self.next_try = time.monotonic() + self.RETRY_S
            log.error("the recompute of the windows open at the contract change did not finish (%s); it is tried "
                      "again in %.0f s, or at the next start", err, self.RETRY_S)
            return
        path = f"{self.root}/{CARRY_OVER_FOLDER}/dashboards.json"
        file_system(self.spark, path).delete(hadoop_path(self.spark, path), False)
        self.due = None
        log.info("the windows open at the contract change are recomputed from bronze: the carry-over is done")

    def _ready(self, due: dict, closed_ms: int) -> bool:
        """The dashboards' watermark is past `closed_ms`, and bronze has committed all they have."""
        dashboards = checkpoint_of(self.settings, "dashboards")
        watermark = next_watermark_ms(self.spark, dashboards)
        if watermark is None or watermark < closed_ms:
            return False
        read = json.loads(committed_source_offsets(self.spark, dashboards) or "{}")
        kept = json.loads(committed_source_offsets(self.spark, checkpoint_of(self.settings, "bronze")) or "{}")
        return all(kept.get(topic, {}).get(partition, -1) >= offset
                   for topic, partitions in read.items() for partition, offset in partitions.items())


def _moment(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
