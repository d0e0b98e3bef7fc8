"""Where a live batch's CPU goes: the job at `--rate` events/s, after `--warmup-s`, measured over `--span-s`; CPU per
second of each group of threads (`/proc/<pid>/task/*`: Spark's task threads, the query's driver thread, the JIT
compilers, GC, the Python handler), per batch and per 1,000 events, and the job's own freshness. `--set` passes
overrides to the job (`--set job.shuffle_partitions=1`); `--java-options` to its JVM.

    python -m benchmarks.per_batch [--rate 1000] [--warmup-s 150] [--span-s 60] [--set K=V ...]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections import Counter
from pathlib import Path

from benchmarks.measure import CLK_TCK, JOB_DEFAULTS, ProcessTree, log, own_stack
from streamdash_toolbox.kafka_client import client_config
from streamdash_toolbox.simulator import SimulatorSettings, send
from streamdash_toolbox.testing.pipeline import Job, job_args


def thread_cpu_s(pids: list[int]) -> Counter:
    """CPU seconds by process and thread name without digits ("java: Executor task launch worker for task")."""
    spent: Counter = Counter()
    for pid in pids:
        try:
            process = Path(f"/proc/{pid}/comm").read_text().strip()
            threads = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for thread in threads:
            try:
                name = (thread / "comm").read_text().strip()
                fields = (thread / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            spent[f"{process}: {''.join(c for c in name if not c.isdigit()).strip(' -#')}"] += (
                int(fields[11]) + int(fields[12])) / CLK_TCK
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--warmup-s", type=float, default=150)
    parser.add_argument("--span-s", type=float, default=60)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--java-options", default="")
    args = parser.parse_args()
    with own_stack() as bench:
        topic, database = bench.new_topic(), bench.new_database("per_batch")
        folder = bench.work / "job"
        folder.mkdir()
        job = Job(job_args(bench.stack, topic, database, folder, *JOB_DEFAULTS, *args.overrides), bench.stack.env(),
                  folder / "job.log", java_options=args.java_options)
        try:
            job.wait_started()
            tree = ProcessTree(job.proc.pid)

            def measured() -> list[int]:
                """The job's processes and InfluxDB's: what the job's writes cost the database too."""
                return [*tree.members(), bench.stack.pid("influxdb")]

            settings = SimulatorSettings(devices=args.devices, sites=10, rate=args.rate, seed=11,
                                         duration_s=args.warmup_s + args.span_s + 10, late_within_rate=0,
                                         late_beyond_rate=0, out_of_order_rate=0, duplicate_rate=0,
                                         malformed_rate=0)
            threading.Thread(target=send, args=(settings, client_config(bench.bootstrap), topic, None),
                             kwargs={"progress": None}, daemon=True).start()
            log(f"{args.rate:g} events/s; warming up for {args.warmup_s:g} s")
            time.sleep(args.warmup_s)
            started, before = time.time(), thread_cpu_s(measured())
            time.sleep(args.span_s)
            ended, after = time.time(), thread_cpu_s(measured())
            tree.stop()
            span_where = f"WHERE time >= {int(started * 1e9)} AND time <= {int(ended * 1e9)}"
            batches = bench.query(f"SELECT freshness_ms FROM pipeline_writes {span_where}", database)
            progress = bench.query(f"SELECT * FROM pipeline_progress {span_where}", database)
        finally:
            job.terminate()
            job.cleanup()
    span = ended - started
    spent = Counter({name: after[name] - before.get(name, 0) for name in after})
    total = sum(spent.values())
    freshness = sorted(row["freshness_ms"] for row in batches)
    print(f"\n{args.rate:g} events/s, {args.overrides or 'defaults'}, {span:.0f} s, load {os.getloadavg()[0]:.2f}: "
          f"{total / span:.2f} cores, {total / (args.rate * span) * 1000:.3f} CPU-s per 1,000 events, "
          f"{len(batches)} batches ({total / max(len(batches), 1):.2f} CPU-s each), job's freshness p50/p95 "
          f"{freshness[len(freshness) // 2] if freshness else '-'} / "
          f"{freshness[int(len(freshness) * 0.95)] if freshness else '-'} ms\n")
    print("| threads | cores |\n|---|---|")
    for name, seconds in spent.most_common(8):
        print(f"| {name} | {seconds / span:.3f} |")
    print(f"\n{phase_table(progress)}")


def phase_table(progress: list[dict]) -> str:
    """Where the batches' time went as Spark reported it (`pipeline_progress`'s `*_ms`), mean ms per batch."""
    phases = sorted({key for row in progress for key in row if key.endswith("_ms") and key != "batch_duration_ms"})
    lines = [f"state rows (mean): {sum(row['state_rows'] for row in progress) / max(len(progress), 1):,.0f}",
             "", "| phase | mean ms per batch |", "|---|---|"]
    for phase in sorted(phases, key=lambda p: -sum(row.get(p) or 0 for row in progress)):
        lines.append(f"| {phase} | {sum(row.get(phase) or 0 for row in progress) / max(len(progress), 1):.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
