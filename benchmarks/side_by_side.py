"""Side by side on one machine, in one run, on the same preloaded topic: Spark's own ceiling, the job, Telegraf and
InfluxDB's write ceiling; then live freshness at each rate, and a soak.

    python -m benchmarks.side_by_side [--events 200000] [--rates 1000,10000] [--live-s 60] [--warmup-s 120]
                                      [--soak-s 600] [--soak-rate 5000] [--third-window "5 minutes"]
                                      [--lakehouse-rates 1000,10000]
                                      [--out benchmarks/out]

(a) ceiling   Spark batch (local[2]): Kafka read + `from_json` with the event schema + a 10 s window aggregate;
              the better of two runs in one process (the ratios use it), and the first (`cold_*`) beside it.
(b) job       the job (spark-submit, local[2], its default trigger and windows 10 s / 1 min) drains the topic
              from `earliest`: every record read, its windows written to InfluxDB (the dashboards have caught up)
              and its dead letters written.
(b) again     with a third window size (`--third-window`): what another size costs, on the same topic; and with
              the bronze and gold Delta tables written too (`--lakehouse-rates`), as (e) is at those rates.
(c) telegraf  Telegraf `kafka_consumer` + `json_v2` + `basicstats` + `quantile` -> InfluxDB (another database),
              until its consumer group has committed the whole topic and the last aggregates have landed.
              Telegraf aggregates by arrival period, not event time: no watermark, no dedup, no dead letters.
(d) influxdb  bulk writes of the job's own device points (25 fields, batches of 5,000, gzip).
(e) freshness the simulator sends in real time (no late, duplicate or malformed events, so event time = send time);
              InfluxDB is polled every 150 ms for each site's newest 10 s window, and each increase of its count
              is timed against the send time of the newest event it includes. The increase became visible
              between the poll that saw it and the one before: `freshness` takes the middle of that interval
              (half a poll, ~85 ms, either way), `freshness_seen` the poll that saw it (an upper bound).
              `freshness_any_window` counts the closing window's last update too: the batch that opens a window
              also writes the previous one's last events, older than the batch's newest by up to the batch's
              span. Also the job's `freshness_ms`.
(f) soak      `--soak-rate` for `--soak-s`: resident memory of the job's processes; the driver JVM's live heap
              (in use right after a full GC, by `jcmd`) every eighth of the soak after the warm-up, its growth taken
              between the lowest sample of each half (a sample taken mid-batch counts the batch's rows as live);
              and its state rows over time.

CPU is the user+system time of each side's processes. Prints a table with ratios to (a) and (c), writes
results.json and a plot (benchmarks/out/side_by_side.png, with matplotlib).
"""


from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import ceiling, job, telegraf
from benchmarks.measure import WINDOW_SIZES, Bench, log, own_stack
from benchmarks.report import plot, print_table
from streamdash_toolbox.stack import install
from streamdash_toolbox.testing import REPO


def on_one_topic(bench: Bench, topic: str, records: int) -> list[dict]:
    """(a) Spark's ceiling, (b) the job's drain and (c) Telegraf, one after the other on the same topic."""
    results = []
    for name, measure in (("Spark ceiling", ceiling.spark), ("job drain", job.drain), ("Telegraf", telegraf.telegraf)):
        log(f"{name} on {records:,} records")
        results.append(measure(bench, topic, records))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="records preloaded for (a)-(c)")
    parser.add_argument("--rates", default="1000,10000", help="events/s for (e); empty for none")
    parser.add_argument("--live-s", type=float, default=60)
    parser.add_argument("--warmup-s", type=float, default=120, help="sent before (e) counts (the JVM's JIT warm-up)")
    parser.add_argument("--soak-s", type=float, default=600, help="0 for no soak")
    parser.add_argument("--soak-rate", type=float, default=5000)
    parser.add_argument("--points", type=int, default=50_000, help="points written for (d)")
    parser.add_argument("--third-window", default="5 minutes",
                        help="after (c), drain again with this third window size (what another size costs); "
                             "empty for none")
    parser.add_argument("--lakehouse-rates", default="1000,10000",
                        help="after (e), the drain again and freshness at these rates with the bronze and gold Delta "
                             "tables written too (what they cost); empty for none")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    install.telegraf_binary(progress=log)
    results: list[dict] = []
    with own_stack() as bench:
        log(f"preloading {args.events:,} events")
        topic, records = bench.preload(args.events)
        results += on_one_topic(bench, topic, records)
        if args.third_window:
            log(f"job drain with a third window size, {args.third_window}")
            results.append(job.drain(bench, topic, records, [*WINDOW_SIZES, args.third_window]))
        log("InfluxDB bulk write")
        results.append(ceiling.influxdb(bench, args.points))
        for rate in (float(r) for r in args.rates.split(",") if r.strip()):
            log(f"freshness at {rate:g} events/s for {args.live_s:g} s")
            results.append(job.freshness(bench, rate, args.live_s, args.warmup_s))
        lakehouse_rates = [float(r) for r in args.lakehouse_rates.split(",") if r.strip()]
        if lakehouse_rates:
            log("job drain with the bronze and gold tables")
            results.append(job.drain(bench, topic, records, lakehouse=True))
        for rate in lakehouse_rates:
            log(f"freshness at {rate:g} events/s for {args.live_s:g} s with the bronze and gold tables")
            results.append(job.freshness(bench, rate, args.live_s, args.warmup_s, lakehouse=True))
        if args.soak_s:
            log(f"soak at {args.soak_rate:g} events/s for {args.soak_s:g} s")
            results.append(job.soak(bench, args.soak_rate, args.soak_s))
    print()
    table = print_table(results)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "table.md").write_text(table + "\n")
    plot(results, out)


if __name__ == "__main__":
    main()

