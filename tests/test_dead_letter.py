"""The dead-letter sink: the same records and counts whichever way a batch's dead letters are written."""

from __future__ import annotations

import json
from pathlib import Path

from streamdash.config import DeadLetterSink, Validation
from streamdash.events import Reason
from streamdash.sinks import dead_letter
from streamdash.sinks.dead_letter import DeadLetters
from streamdash.sinks.influxdb import InfluxWriter
from streamdash.transforms.parse import dead_letters, parse_events
from streamdash_toolbox.testing.records import raw, with_


def records(folder: Path) -> list[dict]:
    """Each record as written, without the time it was written."""
    found = [json.loads(text) for part in sorted(folder.glob("stream=*/batch_id=*/part-*")) for text in
             part.read_text().splitlines()]
    return sorted(({k: v for k, v in record.items() if k != "dead_lettered_at"} for record in found),
                  key=lambda record: record["offset"])


def test_the_driver_and_spark_write_the_same_dead_letters_and_counts(spark, influx, database, tmp_path,
                                                                     monkeypatch):
    letters = dead_letter.invalid_records(dead_letters(parse_events(
        raw(spark, b"{oops", with_(seq="x"), with_(site=""), with_()), Validation()))).persist()
    writer = InfluxWriter(url=influx.url, org="streamdash", bucket=f"{database}/autogen", token=influx.token)
    driver, executors = DeadLetterSink(path=str(tmp_path / "driver")), DeadLetterSink(path=str(tmp_path / "spark"))

    planned = {7: 1_796_000_000_000}.get  # when the query planned batch 7
    assert DeadLetters(driver, writer, "driver", planned).write(letters, 7).written == 3
    DeadLetters(driver, writer, "driver", planned).write(letters, 7)  # a replay replaces the batch's file and point
    monkeypatch.setattr(dead_letter, "MAX_JSON_BYTES_FROM_DRIVER", 0)
    DeadLetters(executors, writer, "spark", planned).write(letters, 7)

    assert [p.name for p in (tmp_path / "driver").glob("stream=driver/batch_id=7/[!._]*")] == ["part-0-0.json"]
    assert records(tmp_path / "driver") == records(tmp_path / "spark")
    assert [(r["offset"], r["reason"], r["topic"]) for r in records(tmp_path / "driver")] == [
        (0, Reason.MALFORMED_JSON, "telemetry"), (1, Reason.WRONG_TYPE, "telemetry"),
        (2, Reason.INVALID_IDENTIFIER, "telemetry")]
    assert records(tmp_path / "driver")[0]["payload"] == "{oops"
    counts = influx.query('SELECT "count" FROM pipeline_deadletter GROUP BY stream, reason', database)
    assert sorted((row["stream"], row["reason"], row["count"], row["time"]) for row in counts) == sorted(
        (stream, reason, 1, 1_796_000_000_000 * 1_000_000 + 7) for stream in ("driver", "spark")
        for reason in (Reason.MALFORMED_JSON, Reason.WRONG_TYPE, Reason.INVALID_IDENTIFIER))
    # A new checkpoint (another query) numbers its batches from 0 again: its batch 7 keeps the old query's records.
    DeadLetters(driver, writer, "driver", {7: 1_796_000_060_000}.get, lambda: "query-2").write(letters, 7)
    names = sorted(p.name for p in (tmp_path / "driver").glob("stream=driver/batch_id=7/[!._]*"))
    assert names[0] == "part-0-0.json" and all(name.startswith("part-query-2-") for name in names[1:])
    assert len(records(tmp_path / "driver")) == 2 * len(records(tmp_path / "spark"))  # Spark's writer, two parts


def test_a_batch_without_dead_letters_writes_nothing(spark, influx, database, tmp_path):
    writer = InfluxWriter(url=influx.url, org="streamdash", bucket=f"{database}/autogen", token=influx.token)
    none = dead_letter.invalid_records(dead_letters(parse_events(raw(spark, with_()), Validation())))
    report = DeadLetters(DeadLetterSink(path=str(tmp_path)), writer, "s", lambda batch_id: 0).write(none, 1)
    assert report.written == 0 and not list(tmp_path.iterdir())
