"""What the job costs by rate, for sizing a cluster: in one run, on one machine, its CPU and freshness live at each
rate (`--rates`, 100 devices; higher rates are skipped once one is not kept up with), a fleet of `--many-devices`
beside 100 devices at `--many-rate`, and the drain of a `--backlog`-event topic beside Spark's ceiling and Telegraf
on the same topic.

    python -m benchmarks.sizing [--rates 100,1000,10000,30000] [--many-devices 20000] [--many-rate 2000]
                                [--backlog 2000000] [--live-s 60] [--warmup-s 90] [--out benchmarks/out]

Prints the curve (cores used against events/s) and the drain's ratios, and writes `sizing.json` and `sizing.png`.
`docs/databricks.md` turns it into a sizing table.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from benchmarks import job
from benchmarks.measure import log, own_stack
from benchmarks.report import pyplot
from benchmarks.side_by_side import on_one_topic
from streamdash_toolbox.stack import install
from streamdash_toolbox.testing import REPO

KEPT_UP_P95_S = 10  # a rate whose freshness p95 is above this is not kept up with: the job falls behind


def curve_table(live: list[dict]) -> str:
    lines = ["| events/s asked | sent | devices | cores | CPU-s / 1k events | freshness p50 / p95 s | caught up |",
             "|---|---|---|---|---|---|---|"]
    for row in live:
        sent = f"{row['sent_per_s']:,.0f}" + ("" if row["sender_kept_up"] else " (the simulator fell behind)")
        lines.append(f"| {row['rate']:,.0f} | {sent} | {row['devices']:,} | {row['cores']:.2f} "
                     f"| {row['live_cpu_s_per_1k']:.3f} | {row['freshness_p50_s']} / {row['freshness_p95_s']} "
                     f"| {row['caught_up']} |")
    return "\n".join(lines)


def drain_table(drain: list[dict]) -> str:
    ceiling_row, telegraf_row = drain[0], drain[2]
    lines = ["| side | events/s | vs ceiling | vs Telegraf | CPU-s / 1k events | seconds |",
             "|---|---|---|---|---|---|"]
    for row in drain:
        lines.append(f"| {row['side']} | {row['events_per_s']:,.0f} | "
                     f"{row['events_per_s'] / ceiling_row['events_per_s']:.2f} | "
                     f"{row['events_per_s'] / telegraf_row['events_per_s']:.2f} | {row['cpu_s_per_1k']:.3f} | "
                     f"{row['seconds']:.1f} |")
    return "\n".join(lines)


def plot(live: list[dict], out: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axis = plt.subplots(figsize=(6, 4))
    for devices in sorted({row["devices"] for row in live}):
        rows = sorted((row for row in live if row["devices"] == devices), key=lambda row: row["sent_per_s"])
        axis.plot([row["sent_per_s"] for row in rows], [row["cores"] for row in rows], "o-",
                  label=f"{devices:,} devices")
        for row in rows:
            if row["freshness_p95_s"] is None or row["freshness_p95_s"] > KEPT_UP_P95_S:
                axis.annotate("fell behind", (row["sent_per_s"], row["cores"]), textcoords="offset points",
                              xytext=(-60, 0), va="center")
    axis.set_xscale("log")
    axis.set_xlabel("events/s sent")
    axis.set_ylabel("cores used (CPU-s per s)")
    axis.legend()
    fig.tight_layout()
    fig.savefig(out / "sizing.png")
    print(f"plot: {out / 'sizing.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,1000,10000,30000")
    parser.add_argument("--many-devices", type=int, default=20_000)
    parser.add_argument("--many-rate", type=float, default=2000)
    parser.add_argument("--backlog", type=int, default=2_000_000, help="0 for no drain")
    parser.add_argument("--live-s", type=float, default=60)
    parser.add_argument("--warmup-s", type=float, default=90)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    install.telegraf_binary(progress=log)
    live, drain = [], []
    with own_stack() as bench:
        runs = [(float(rate), 100) for rate in args.rates.split(",") if rate.strip()]
        if args.many_devices:
            runs += [(args.many_rate, args.many_devices), (args.many_rate, 100)]
        for rate, devices in runs:
            if devices == 100 and any(row["rate"] < rate and row["devices"] == 100 and not kept_up(row)
                                      for row in live):
                log(f"skipping {rate:g} events/s: a lower rate was not kept up with")
                continue
            log(f"live at {rate:g} events/s from {devices:,} devices")
            row = job.freshness(bench, rate, args.live_s, args.warmup_s, devices=devices)
            live.append({**row, "rate": rate, "devices": devices})
        if args.backlog:
            log(f"preloading {args.backlog:,} events")
            topic, records = bench.preload(args.backlog)
            drain = on_one_topic(bench, topic, records)
    print(f"\nload average at the end: {os.getloadavg()}\n\n{curve_table(live)}\n")
    if drain:
        print(drain_table(drain))
    (out / "sizing.json").write_text(json.dumps({"live": live, "drain": drain}, indent=2, default=str))
    plot(live, out)


def kept_up(row: dict) -> bool:
    return bool(row["caught_up"]) and row["freshness_p95_s"] is not None and row["freshness_p95_s"] <= KEPT_UP_P95_S


if __name__ == "__main__":
    main()
