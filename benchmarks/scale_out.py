"""One backlog drained by the job in local mode, then on the standalone cluster with one worker and with two (a core
and 1.5 GiB each), one after the other on one topic in one run: whether its cost grows with anything but events.
Each drain has the same plan (`--state-partitions`, which a checkpoint keeps) and counts the CPU of the driver and of
the workers with their executors.

    python -m benchmarks.scale_out [--backlog 2000000] [--workers 0,1,2] [--state-partitions 2] [--out benchmarks/out]

`--workers 0` is local mode (`local[2]`). Prints a Markdown table and writes `scale_out.json`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from benchmarks import job
from benchmarks.measure import WINDOW_SIZES, log, own_stack
from streamdash_toolbox.stack.spark import worker_name
from streamdash_toolbox.testing import REPO


def table(rows: list[dict]) -> str:
    lines = ["| where | events/s | x local | CPU-s / 1k events | batches | median batch s | load |",
             "|---|---|---|---|---|---|---|"]
    local = next((row["events_per_s"] for row in rows if not row["workers"]), None)
    for row in rows:
        where = f"{row['workers']} worker" + ("s" if row["workers"] > 1 else "") if row["workers"] else "local[2]"
        ratio = f"{row['events_per_s'] / local:.2f}" if local else "-"
        lines.append(f"| {where} | {row['events_per_s']:,.0f} | {ratio} | {row['cpu_s_per_1k']:.3f} | {row['batches']} "
                     f"| {row['median_batch_ms'] / 1000:.1f} | {row['load']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=2_000_000)
    parser.add_argument("--workers", default="0,1,2", help="comma-separated; 0 is local mode")
    parser.add_argument("--state-partitions", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args()
    counts = [int(count) for count in args.workers.split(",")]
    rows = []
    with own_stack() as bench:
        log(f"preloading {args.backlog:,} events")
        topic, records = bench.preload(args.backlog)
        for workers in counts:
            where = {}
            if workers:
                cluster = bench.stack.up(spark_workers=workers)["spark"]
                where = {"master": cluster["master_url"],
                         "executors": tuple(bench.stack.pid(worker_name(n)) for n in range(1, workers + 1))}
            log(f"draining {records:,} events on {workers or 'no'} workers")
            drained = job.drain(bench, topic, records, WINDOW_SIZES, False,
                                f"job.shuffle_partitions={args.state_partitions}", **where)
            rows.append({"workers": workers, "load": os.getloadavg()[0], **drained})
            log(table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale_out.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
