"""Where a live batch's CPU goes, the job beside Spark's own floor for the same windows (`benchmarks.floor_query`):
each query in turn at `--rate` events/s, after `--warmup-s`, measured over `--span-s`: CPU per batch and per 1,000
events, the JIT compilers' share apart, Spark jobs, stages and tasks per batch (the driver's event log), planning and
state-update time per batch (Spark's progress), the job's own freshness, and the CPU per second of each group of
threads (`/proc/<pid>/task/*`). `--set` passes overrides to every query (`--set source.max_offsets_per_trigger=1000`,
`--set job.trigger_interval="2 seconds"`); `--java-options` to its JVM.

    python -m benchmarks.per_batch [--queries job,f3,f2] [--rate 1000] [--warmup-s 150] [--span-s 60] [--set K=V ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

from benchmarks import floor_query
from benchmarks.measure import CLK_TCK, JOB_DEFAULTS, ProcessTree, log, own_stack
from streamdash_toolbox.kafka_client import client_config
from streamdash_toolbox.simulator import SimulatorSettings, send
from streamdash_toolbox.testing import REPO
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


QUERIES = ("job", *floor_query.QUERIES)
BEFORE = "job before"  # the job from another checkout's `src/` (`--before`), for a before/after table in one run
JIT = "java: C CompilerThre"  # HotSpot's C1 and C2 compilers, as /proc names them (15 characters, no digits)


def spark_work(event_log: Path, started_ms: float, ended_ms: float) -> Counter:
    """Spark jobs, stages and tasks that began within the span, from the driver's event log."""
    counts: Counter = Counter()
    for path in event_log.rglob("events_*"):  # Spark 4 rolls its log in a folder, beside an empty status file
        for text in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(text)
            except ValueError:  # the line being written when the JVM stopped
                continue
            kind = event.get("Event")
            began = (event.get("Submission Time") if kind == "SparkListenerJobStart"
                     else (event.get("Stage Info") or {}).get("Submission Time")
                     if kind == "SparkListenerStageCompleted"
                     else (event.get("Task Info") or {}).get("Launch Time") if kind == "SparkListenerTaskEnd" else None)
            if began is not None and started_ms <= began <= ended_ms:
                counts[kind] += 1
    return counts


def measure(bench, query: str, args: argparse.Namespace) -> dict:
    """One query fed live at `args.rate`: its CPU by thread over `args.span_s` after `args.warmup_s`, its batches."""
    topic, database = bench.new_topic(), bench.new_database(f"per_batch_{query.replace(' ', '_')}")
    folder = bench.work / database  # no space: the event log's folder is in the JVM's options
    (folder / "events").mkdir(parents=True)
    floor = query in floor_query.QUERIES
    script = Path(floor_query.__file__) if floor else REPO / "jobs" / "stream_to_influx.py"
    env = {**bench.stack.env(), **({"PYTHONPATH": args.before} if query == BEFORE else {})}
    event_log = (f"-Dspark.eventLog.enabled=true -Dspark.eventLog.dir={folder / 'events'} "
                 "-Dspark.eventLog.compress=false")
    job = Job([*([query] if floor else []), *job_args(bench.stack, topic, database, folder, *JOB_DEFAULTS,
                                                      *args.overrides)],
              env, folder / "job.log", java_options=f"{event_log} {args.java_options}".strip(),
              script=script)
    try:
        job.wait_started()
        tree = ProcessTree(job.proc.pid)

        def measured() -> list[int]:
            """The job's processes and InfluxDB's: what the job's writes cost the database too."""
            return [*tree.members(), bench.stack.pid("influxdb")]

        settings = SimulatorSettings(devices=args.devices, sites=10, rate=args.rate, seed=11,
                                     duration_s=args.warmup_s + args.span_s + 10, late_within_rate=0,
                                     late_beyond_rate=0, out_of_order_rate=0, duplicate_rate=0, malformed_rate=0)
        threading.Thread(target=send, args=(settings, client_config(bench.bootstrap), topic, None),
                         kwargs={"progress": None}, daemon=True).start()
        log(f"{query}: {args.rate:g} events/s; warming up for {args.warmup_s:g} s")
        time.sleep(args.warmup_s)
        started, before = time.time(), thread_cpu_s(measured())
        time.sleep(args.span_s)
        ended, after = time.time(), thread_cpu_s(measured())
        load = os.getloadavg()[0]
        tree.stop()
        span_where = f"WHERE time >= {int(started * 1e9)} AND time <= {int(ended * 1e9)}"
        writes = bench.query(f"SELECT freshness_ms FROM pipeline_writes {span_where}", database)
        progress = [row for row in bench.query(f"SELECT * FROM pipeline_progress {span_where}", database)
                    if row["input_rows"]]
    finally:
        job.terminate()
        job.cleanup()
    span = ended - started
    spent = Counter({name: after[name] - before.get(name, 0) for name in after})
    work = spark_work(folder / "events", started * 1000, ended * 1000)
    batches = max(len(progress), 1)
    events = sum(row["input_rows"] for row in progress)
    freshness = sorted(row["freshness_ms"] for row in writes)
    return {"query": query, "span_s": span, "load": load, "cpu_s": sum(spent.values()), "jit_cpu_s": spent[JIT],
            "threads": spent, "batches": len(progress), "events": events,
            "cpu_s_per_batch": sum(spent.values()) / batches, "events_per_batch": events / batches,
            "cpu_s_per_1k": sum(spent.values()) / max(events, 1) * 1000,
            "median_batch_ms": statistics.median(row["batch_duration_ms"] for row in progress) if progress else None,
            "jobs_per_batch": work["SparkListenerJobStart"] / batches,
            "stages_per_batch": work["SparkListenerStageCompleted"] / batches,
            "tasks_per_batch": work["SparkListenerTaskEnd"] / batches,
            "planning_ms": sum(row.get("query_planning_ms") or 0 for row in progress) / batches,
            "state_updates_ms": sum(row.get("state_updates_ms") or 0 for row in progress) / batches,
            "freshness_p50_ms": freshness[len(freshness) // 2] if freshness else None,
            "freshness_p95_ms": freshness[int(len(freshness) * 0.95)] if freshness else None,
            "progress": progress}


def side_by_side(rows: list[dict]) -> str:
    """The per-batch table: one row per query, with each one's CPU per batch beside the last query's."""
    floor = rows[-1]
    lines = ["| query | CPU-s per batch | x " + floor["query"] + " | events per batch | CPU-s per 1,000 events | "
             "JIT CPU-s per batch | median batch ms | jobs / stages / tasks per batch | planning ms | "
             "state updates ms | freshness p50 / p95 ms | load |", "|---" * 12 + "|"]
    for row in rows:
        fresh = (f"{row['freshness_p50_ms']} / {row['freshness_p95_ms']}" if row["freshness_p50_ms"] is not None
                 else "-")
        lines.append(
            f"| {row['query']} | {row['cpu_s_per_batch']:.2f} | "
            f"{row['cpu_s_per_batch'] / max(floor['cpu_s_per_batch'], 1e-9):.2f} | {row['events_per_batch']:.0f} | "
            f"{row['cpu_s_per_1k']:.3f} | {row['jit_cpu_s'] / max(row['batches'], 1):.3f} | "
            f"{row['median_batch_ms'] or 0:.0f} | {row['jobs_per_batch']:.1f} / {row['stages_per_batch']:.1f} / "
            f"{row['tasks_per_batch']:.1f} | {row['planning_ms']:.0f} | {row['state_updates_ms']:.0f} | {fresh} | "
            f"{row['load']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", default="job", help=f"comma-separated, run one after the other: {QUERIES}; "
                        "the last is the one the others are compared with")
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--warmup-s", type=float, default=150)
    parser.add_argument("--span-s", type=float, default=60)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--java-options", default="")
    parser.add_argument("--before", metavar="SRC", help="first, the job from this checkout's src/ folder (a git "
                        "worktree of the commit to compare with)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    queries = args.queries.split(",")
    assert set(queries) <= set(QUERIES), f"--queries: {QUERIES}"
    queries = [BEFORE, *queries] if args.before else queries
    with own_stack() as bench:
        rows = []
        for query in queries:
            rows.append(measure(bench, query, args))
            log(side_by_side(rows[-1:]))
    print(f"\n{args.rate:g} events/s, {args.overrides or 'defaults'}, {rows[0]['span_s']:.0f} s measured after "
          f"{args.warmup_s:g} s\n\n{side_by_side(rows)}")
    for row in rows:
        print(f"\n{row['query']}: {row['cpu_s'] / row['span_s']:.2f} cores, {row['cpu_s_per_1k']:.3f} "
              f"CPU-s per 1,000 events, {row['batches']} batches ({row['cpu_s_per_batch']:.2f} CPU-s each)\n")
        print("| threads | cores |\n|---|---|")
        for name, seconds in row["threads"].most_common(8):
            print(f"| {name} | {seconds / row['span_s']:.3f} |")
        print(f"\n{phase_table(row['progress'])}")
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in row.items() if k not in ("threads", "progress")}
                                         for row in rows], indent=1))


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
