"""Faults that must never stop the stream nor lose or double data, each checked against ground truth: an
InfluxDB outage, a broker restart, SIGKILLs at random moments, poison event times and points InfluxDB
refuses; and no process of the job outlives the others."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from streamdash.events import Reason
from streamdash.sinks import delta
from streamdash.sinks.influxdb import InfluxWriter
from streamdash_toolbox.stack.process import processes
from streamdash_toolbox.testing import REPO
from streamdash_toolbox.testing.pipeline import (
    STALL_S,
    GroundTruth,
    Job,
    checkpoint_progress,
    dead_letter_counts,
    dead_letter_records,
    job_args,
    simulate,
    wait_for,
)


def plaintext(stack) -> list[str]:
    return ["--bootstrap", stack.info["kafka"]["bootstrap_servers"]]


def some_windows_landed(influx, database: str) -> bool:
    return bool(influx.query("SELECT count(\"count\") FROM telemetry_site", database))


def stay_alive(job: Job, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert job.proc.poll() is None, f"the job exited:\n{job.output()[-3000:]}"
        time.sleep(1)


@pytest.mark.parametrize(("service", "down_s", "send_s"), [("influxdb", 90, 90), ("kafka", 10, 40)])
def test_an_outage_mid_stream_is_ridden_out(stack, stack_env, influx, topic, database, tmp_path, service, down_s,
                                            send_s):
    """InfluxDB stopped for 90 s, or the Kafka broker restarted: the job never exits and loses nothing."""
    job = Job(job_args(stack, topic, database, tmp_path), stack_env, tmp_path / "job.log")
    try:
        job.wait_started()
        sender = simulate(plaintext(stack), topic, tmp_path / "manifest.jsonl", stack_env,
                          extra=("--duration", str(send_s), "--late-beyond-rate", "0"))
        assert wait_for(lambda: some_windows_landed(influx, database), 120)
        stack.stop_service(service)
        try:
            stay_alive(job, down_s)
        finally:
            stack.start_service(service)
        assert sender.wait(timeout=240) == 0
        GroundTruth(tmp_path / "manifest.jsonl").assert_matches(influx, database, tmp_path)
        assert job.proc.poll() is None
        if service == "influxdb":
            # One line as the outage begins, then one every 30 s, each with how long it has lasted.
            outage = re.findall(r"unavailable for (\d+) s", job.output())
            assert len(outage) >= 2 and int(outage[-1]) >= 30, outage
            blocked = influx.query("SELECT max(sink_blocked_ms) FROM pipeline_writes", database)
            assert blocked and blocked[0]["max"] >= 60_000, "pipeline_writes says how long writes were blocked"
        assert job.terminate() == 0
    finally:
        job.cleanup()


def test_five_sigkills_at_random_moments_lose_and_double_nothing(stack, stack_env, influx, topic, database, tmp_path):
    """No events beyond the watermark here: Spark advances the watermark only between batches, so the first
    batches after a crash may still accept them (see README)."""
    seed = random.randrange(1 << 30)
    moments = random.Random(seed).sample(range(1, 11), 5)
    args = job_args(stack, topic, database, tmp_path)
    sender = simulate(plaintext(stack), topic, tmp_path / "manifest.jsonl", stack_env,
                      extra=("--late-beyond-rate", "0", "--duration", "60"))
    try:
        for moment in moments:
            job = Job(args, stack_env, tmp_path / "job.log")
            try:
                job.wait_started()
                time.sleep(moment)
            finally:
                job.kill()
        final = Job(args, stack_env, tmp_path / "job.log")
        try:
            final.wait_started()
            assert sender.wait(timeout=240) == 0
            GroundTruth(tmp_path / "manifest.jsonl").assert_matches(influx, database, tmp_path)
            assert final.terminate() == 0
        finally:
            final.cleanup()
    finally:
        if sender.poll() is None:
            sender.kill()
    print(f"SIGKILLs {moments} s after each start (seed {seed})")


def test_poison_event_times_and_refused_points_never_stop_the_stream(stack, stack_env, influx, topic, database,
                                                                    tmp_path):
    """Far-future and far-past event times in the middle of good data are dead letters that move no watermark;
    a field-type conflict in the target database makes InfluxDB refuse every site point: each is a
    `sink_rejected` dead letter with InfluxDB's reason, and every device point still lands."""
    conflict = f'telemetry_site,site=elsewhere,window=5s temperature_mean="text" {time.time_ns()}'
    writer = InfluxWriter(influx.url, "streamdash", f"{database}/autogen", influx.token)
    assert writer.write_lines([conflict]).written == 1
    job = Job(job_args(stack, topic, database, tmp_path), stack_env, tmp_path / "job.log")
    try:
        job.wait_started()
        sender = simulate(plaintext(stack), topic, tmp_path / "manifest.jsonl", stack_env,
                          extra=("--malformed-rate", "0.05", "--malformed-reasons", Reason.EVENT_TIME_OUT_OF_RANGE,
                                 "--late-beyond-rate", "0"))
        assert sender.wait(timeout=180) == 0
        truth = GroundTruth(tmp_path / "manifest.jsonl", measurements=("telemetry_device",))
        truth.assert_matches(influx, database, tmp_path)
        poison = {json.dumps(json.loads(record["payload"])["eventTime"])[:5]
                  for record in dead_letter_records(tmp_path / "dead_letters")}
        assert {'"9999', '"2200', "0", "-1", "25340"} <= poison, "years 9999, 2200, 10000 (epoch ms), 1970"

        expected_sites = {(key[1], key[2], key[4]) for key in GroundTruth(tmp_path / "manifest.jsonl").points
                          if key[0] == "telemetry_site"}

        def refused() -> list[dict]:
            records = dead_letter_records(tmp_path / "dead_letters", "")
            return [record for record in records if record["reason"] == Reason.SINK_REJECTED]

        def refused_sites() -> set[tuple]:
            found = set()
            for record in refused():
                series, _, timestamp = record["payload"].rsplit(" ", 2)
                tags = dict(tag.split("=", 1) for tag in series.split(",")[1:])
                found.add((tags["window"], tags["site"], int(timestamp)))
            return found

        assert wait_for(lambda: refused_sites() == expected_sites, 120), (len(refused_sites()), len(expected_sites))
        assert all("field type conflict" in r["detail"] for r in refused())
        def counted() -> int | None:
            rows = influx.query(f"SELECT sum(\"count\") FROM pipeline_deadletter WHERE reason = "
                                f"'{Reason.SINK_REJECTED}'", database)
            return rows[0]["sum"] if rows else None

        assert wait_for(lambda: counted() == len(refused()), 60), (counted(), len(refused()))
        streams = {row["value"] for row in influx.query("SHOW TAG VALUES FROM pipeline_deadletter WITH KEY = stream",
                                                        database)}
        assert f"e2e_{database}_aggregates" in streams
        assert job.proc.poll() is None
        assert job.terminate() == 0
    finally:
        job.cleanup()


def test_no_process_of_the_job_outlives_the_others(stack, stack_env, topic, database, tmp_path):
    args = job_args(stack, topic, database, tmp_path)
    job = Job(args, stack_env, tmp_path / "job.log")
    try:
        job.wait_started()
        driver = job.driver_pid()
        os.kill(job.proc.pid, signal.SIGKILL)  # the JVM alone
        job.proc.wait(timeout=30)
        assert wait_for(lambda: driver not in [pid for pid, _, _ in processes()], 30), "the Python driver was orphaned"
        assert job_processes(tmp_path) == []
    finally:
        job.cleanup()
    job = Job(args, stack_env, tmp_path / "job.log")
    try:
        job.wait_started()
        os.kill(job.driver_pid(), signal.SIGKILL)  # the Python driver alone
        job.proc.wait(timeout=60)
        assert wait_for(lambda: job_processes(tmp_path) == [], 30), "the JVM was left behind"
    finally:
        job.cleanup()


@contextmanager
def streamdash_job(stack, stack_env, topic: str, database: str, work: Path, output) -> Iterator[subprocess.Popen]:
    """`streamdash job -- <the tests' job arguments>`, as a person runs it, its output to `output`; on the way out,
    whatever is left of it is killed."""
    command = subprocess.Popen([sys.executable, "-m", "streamdash_toolbox.cli", "job", "--",
                                *job_args(stack, topic, database, work)], stdout=output, stderr=subprocess.STDOUT,
                               cwd=REPO, env={**os.environ, **stack_env})
    try:
        yield command
    finally:
        for pid, ppid, _ in processes():
            if ppid == command.pid:  # spark-submit, in a session of its own
                os.killpg(pid, signal.SIGKILL)
        command.kill()


def job_processes(work: Path) -> list[int]:
    """The processes of a job whose folder is `work` (the folder is in their command lines)."""
    return [pid for pid, _, cmdline in processes() if str(work).encode() in cmdline]


def test_ctrl_c_on_streamdash_job_finishes_the_batch_and_stops_cleanly(stack, stack_env, topic, database, tmp_path):
    """A hand-run job (`streamdash job`, as the README shows it) stops as `make run` does: Ctrl-C reaches only the
    command, which asks the driver to finish its batch; spark-submit's JVM does not die under it."""
    log = tmp_path / "job.log"
    with log.open("wb") as out, streamdash_job(stack, stack_env, topic, database, tmp_path, out) as command:
        assert wait_for(lambda: "streamdash.job: started" in log.read_text(errors="replace"), 180), log.read_text()
        command.send_signal(signal.SIGINT)
        assert command.wait(timeout=120) == 0, log.read_text()[-3000:]
        assert "stopped cleanly" in log.read_text() and "Traceback" not in log.read_text()


def test_ctrl_c_stops_the_job_when_its_output_pipe_is_closed(stack, stack_env, topic, database, tmp_path):
    """`streamdash job 2>&1 | tee run.log` and Ctrl-C: the terminal's SIGINT ends `tee` too, so the command's
    output pipe is closed when it would say that it stops the job. The job must stop all the same, and no process
    of it be left running."""
    with streamdash_job(stack, stack_env, topic, database, tmp_path, subprocess.PIPE) as command:
        for text in command.stdout:  # what tee would read, until the job has started
            if b"streamdash.job: started" in text:
                break
        command.stdout.close()  # tee is gone
        command.send_signal(signal.SIGINT)
        command.wait(timeout=120)
        assert wait_for(lambda: job_processes(tmp_path) == [], 120), "the job was left running"


@contextmanager
def job_without_influxdb(stack, stack_env, topic: str, database: str, work: Path, *overrides: str
                         ) -> Iterator[tuple[Job, str]]:
    """The job pointed at an address where no InfluxDB listens (`nowhere`), started and fed a few seconds of the
    simulator; cleaned up on the way out."""
    from streamdash_toolbox.stack.process import free_port

    nowhere = f"http://127.0.0.1:{free_port()}"
    job = Job(job_args(stack, topic, database, work, f"influxdb.url={nowhere}", *overrides), stack_env,
              work / "job.log")
    try:
        job.wait_started()
        sender = simulate(plaintext(stack), topic, work / "manifest.jsonl", stack_env, extra=("--duration", "3"))
        assert sender.wait(timeout=120) == 0
        yield job, nowhere
    finally:
        job.cleanup()


def error_lines(job: Job) -> list[str]:
    return [line for line in job.output().splitlines() if " ERROR streamdash.job: " in line]


def test_a_stop_that_must_cancel_a_batch_says_which_and_exits_1(stack, stack_env, topic, database, tmp_path):
    """A batch that outlasts `job.stop_timeout` (here: its windows wait for an InfluxDB that is not there) is
    cancelled, and the job says so in one line and exits 1, instead of "stopped cleanly"; the batch has no commit,
    so the next start replays it."""
    checkpoint = tmp_path / "checkpoints" / "aggregates"
    with job_without_influxdb(stack, stack_env, topic, database, tmp_path, "job.stop_timeout=2 seconds") as (job, _):
        # Stuck: a batch that holds records cannot commit without InfluxDB (the empty batch 0 can, and its
        # self-metrics say "unavailable" too, so the log is no signal).
        assert wait_for(lambda: stuck_batch(checkpoint) is not None, 300), job.output()[-3000:]
        stuck = stuck_batch(checkpoint)
        assert job.terminate() == 1
        errors = error_lines(job)
        assert len(errors) == 1 and "stopped cleanly" not in job.output(), errors
        assert re.findall(r"batch (\d+) was still running and is cancelled", errors[0]) == [str(stuck)]
        assert "replayed from the checkpoint" in errors[0]
        assert (checkpoint / "offsets" / str(stuck)).exists() and not (checkpoint / "commits" / str(stuck)).exists()


def stuck_batch(checkpoint: Path) -> int | None:
    """The batch the query has logged but not committed, if its offsets are past the topic's start (it holds
    records: no batch before it committed any)."""
    committed = {p.name for p in (checkpoint / "commits").glob("[0-9]*")}
    for offsets in (checkpoint / "offsets").glob("[0-9]*"):
        lines = offsets.read_text().splitlines()
        ends = json.loads(lines[2]) if len(lines) > 2 else {}
        if offsets.name not in committed and sum(n for partitions in ends.values() for n in partitions.values()):
            return int(offsets.name)
    return None


def test_past_max_outage_the_job_fails_with_one_clear_line(stack, stack_env, topic, database, tmp_path):
    with job_without_influxdb(stack, stack_env, topic, database, tmp_path, "influxdb.max_outage=5 seconds") as (
            job, nowhere):
        assert job.proc.wait(timeout=300) == 1
        errors = error_lines(job)
        assert len(errors) == 1, errors
        assert f"InfluxDB at {nowhere} was unavailable for" in errors[0]
        assert "longer than influxdb.max_outage allows" in errors[0]
        assert stack_env["INFLUXDB_TOKEN"] not in job.output()


def test_a_record_spark_s_kafka_source_cannot_read_is_dead_lettered_and_the_stream_goes_on(stack, stack_env, influx,
                                                                                          database, tmp_path, spark):
    """Records stamped 9.3e15 ms (on a topic that accepts any timestamp) fail Spark's Kafka source in every batch
    that holds them: one first in its partition, two in the middle of the simulator's records. The dashboards' and
    the bronze query each move past them; the dashboards dead-letter each with its position (`unreadable_record`)
    and count it; every other record is exact in InfluxDB, and in bronze once."""
    from confluent_kafka import Producer

    from streamdash_toolbox.stack import create_topic

    topic = f"t-{uuid.uuid4().hex[:10]}"
    bootstrap = stack.info["kafka"]["bootstrap_servers"]
    create_topic(bootstrap, topic, partitions=3, config={"message.timestamp.after.max.ms": str(2**63 - 1)})
    producer = Producer({"bootstrap.servers": bootstrap})

    def unreadable(partition: int) -> None:
        payload = json.dumps({"deviceId": "dev-0001", "site": "site-01", "eventTime": int(time.time() * 1000),
                              "seq": 1, "schemaVersion": 1, "measurements": {"temperature": 1.0}})
        producer.produce(topic, payload.encode(), partition=partition, timestamp=9_300_000_000_000_000)
        assert producer.flush(30) == 0

    unreadable(2)  # the first record of its partition: batch 0 starts at it
    for phase, seed in ((1, "1"), (2, "2")):
        sender = simulate(plaintext(stack), topic, tmp_path / f"manifest-{phase}.jsonl", stack_env,
                          extra=("--duration", "8", "--seed", seed, "--late-beyond-rate", "0"))
        assert sender.wait(timeout=120) == 0
        if phase == 1:
            unreadable(0), unreadable(1)  # amid the records: a batch must stop short of each
    (tmp_path / "manifest.jsonl").write_text((tmp_path / "manifest-1.jsonl").read_text()
                                             + (tmp_path / "manifest-2.jsonl").read_text())
    bronze = str(tmp_path / "bronze")
    job = Job(job_args(stack, topic, database, tmp_path, f"lakehouse.bronze={bronze}"), stack_env,
              tmp_path / "job.log")
    try:
        job.wait_started()
        truth = GroundTruth(tmp_path / "manifest.jsonl")
        truth.assert_matches(influx, database, tmp_path)
        sent = {(entry["partition"], entry["offset"]) for entry in truth.entries}

        def in_bronze() -> set[tuple[int, int]]:  # not its progress: SPARK-55271 loses a recovered batch's
            return {(row.partition, row.offset) for row in delta.read(spark, bronze).select("partition", "offset")
                    .collect()}

        assert wait_for(lambda: in_bronze() == sent, STALL_S, progress=lambda: checkpoint_progress(tmp_path)), (
            len(in_bronze()), len(sent))
        assert delta.read(spark, bronze).count() == len(sent), "once each"
        letters = [record for partition in range(3)
                   for record in dead_letter_records(tmp_path / "dead_letters", f"_unreadable_{partition}")]
        assert sorted((r["partition"], r["reason"]) for r in letters) == [
            (p, Reason.UNREADABLE_RECORD) for p in range(3)]
        assert {r["offset"] for r in letters if r["partition"] == 2} == {0}
        assert all(r["offset"] > 0 and "9300000000000000 ms" in r["detail"] for r in letters if r["partition"] < 2)
        assert dead_letter_counts(influx, database).get(Reason.UNREADABLE_RECORD) == 3
        skipped = [line for line in job.output().splitlines() if "which Spark's Kafka source cannot read" in line]
        assert len(skipped) == 6, skipped  # by each query
        assert job.proc.poll() is None
        assert job.terminate() == 0
    finally:
        job.cleanup()
