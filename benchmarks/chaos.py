"""Chaos run: the real job under repeated SIGKILLs, an InfluxDB outage and a broker restart, then an exact
comparison of InfluxDB and the dead letters with ground truth computed from what the simulator sent.

    python -m benchmarks.chaos [--minutes 10] [--rate 1000] [--kills 20] [--outage-s 60] [--seed N]

While the simulator sends for `--minutes` at `--rate` events/s, the job (spark-submit, local[2], windows 5 s
and 20 s) is SIGKILLed `--kills` times at random moments and started again from its checkpoint, InfluxDB is
stopped once for `--outage-s` and the Kafka broker is restarted once. No events beyond the watermark are sent
(after a crash Spark's watermark starts from the checkpoint's, see README). After the last event the job runs
until InfluxDB matches ground truth (or 30 minutes pass). Prints a summary; exits 1 on any mismatch.
Not part of CI: it takes about (minutes + 10) minutes.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from streamdash_toolbox.stack import Stack, create_topic
from streamdash_toolbox.testing import FREE_PORTS, Influx
from streamdash_toolbox.testing.pipeline import GroundTruth, Job, job_args, simulate


def timeline(rng: random.Random, send_s: float, kills: int, outage_s: float) -> list[tuple[float, str]]:
    """(seconds after the start, action): kills spread over the run, one outage and one broker restart."""
    events = [(rng.uniform(10, send_s), "kill") for _ in range(kills)]
    outage_at = rng.uniform(0.2, 0.5) * send_s
    restart_at = rng.uniform(0.6, 0.9) * send_s
    events += [(outage_at, "influxdb down"), (outage_at + outage_s, "influxdb up"),
               (restart_at, "kafka down"), (restart_at + 10, "kafka up")]
    return sorted(events)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--outage-s", type=float, default=60)
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    send_s = args.minutes * 60
    plan = timeline(random.Random(args.seed), send_s, args.kills, args.outage_s)
    print(f"chaos: seed {args.seed}, {args.minutes:g} min at {args.rate:g} events/s, {args.kills} kills", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stack = Stack(work / "stack", ports=FREE_PORTS, die_with_parent=True)
        stack.up()
        try:
            return run(stack, work, plan, args, send_s)
        finally:
            stack.down()


def run(stack: Stack, work: Path, plan: list[tuple[float, str]], args: argparse.Namespace, send_s: float) -> int:
    influx, env = Influx(stack), stack.env()
    topic, database = "chaos", influx.create_database("chaos")
    create_topic(stack.info["kafka"]["bootstrap_servers"], topic, partitions=4)
    job_argv = job_args(stack, topic, database, work)
    sender = simulate(["--bootstrap", stack.info["kafka"]["bootstrap_servers"]], topic, work / "manifest.jsonl", env,
                      extra=("--rate", str(args.rate), "--duration", str(send_s), "--devices", "100", "--sites", "10",
                             "--late-beyond-rate", "0"))
    started, kills, log = time.monotonic(), 0, work / "job.log"
    job = Job(job_argv, env, log)
    try:
        for at, action in plan:
            time.sleep(max(0.0, at - (time.monotonic() - started)))
            print(f"chaos: {time.monotonic() - started:6.0f} s  {action}", flush=True)
            if action == "kill":
                job.kill()
                kills += 1
                job = Job(job_argv, env, log)
            elif action.endswith("down"):
                stack.stop_service(action.split()[0])
            else:
                stack.start_service(action.split()[0])
            assert job.proc.poll() is None, f"the job exited by itself:\n{job.output()[-3000:]}"
        assert sender.wait(timeout=send_s + 600) == 0, "the simulator failed"
        truth = GroundTruth(work / "manifest.jsonl")
        print(f"chaos: all sent after {time.monotonic() - started:.0f} s; waiting for the job to match ground truth",
              flush=True)
        deadline = time.monotonic() + 1800
        problems = truth.differences(influx, database, work)
        while problems and time.monotonic() < deadline:
            assert job.proc.poll() is None, f"the job exited by itself:\n{job.output()[-3000:]}"
            time.sleep(10)
            problems = truth.differences(influx, database, work)
        job.terminate()
    finally:
        job.cleanup()
        if sender.poll() is None:
            sender.kill()
    expected_events = sum(fields["count"] for key, fields in truth.points.items()
                          if key[0] == "telemetry_site" and key[1] == "5s")
    landed = influx.query("SELECT sum(\"count\") FROM telemetry_site WHERE \"window\" = '5s'", database)
    landed_events = landed[0]["sum"] if landed else 0
    summary = {"seed": args.seed, "records sent": len(truth.entries), "kills survived": kills,
               "influxdb outage s": args.outage_s, "broker restarts": 1, "windows compared": len(truth.points),
               "mismatches": len(problems), "events lost": expected_events - landed_events,
               "dead letters expected": len(truth.dead), "minutes": round((time.monotonic() - started) / 60, 1)}
    print()
    for name, value in summary.items():
        print(f"{name:>22}  {value}")
    if problems:
        print("first differences:", problems[:5])
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
