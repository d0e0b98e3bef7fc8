"""The side-by-side table (with ratios to Spark's ceiling and Telegraf) and its plot."""

from __future__ import annotations

from pathlib import Path


def print_table(results: list[dict]) -> str:
    ceiling = next((r["events_per_s"] for r in results if r["side"].startswith("(a)")), None)
    telegraf = next((r["events_per_s"] for r in results if r["side"].startswith("(c)")), None)
    lines = ["| side | events/s | vs (a) ceiling | vs (c) Telegraf | CPU s / 1k events | other |",
             "|---|---|---|---|---|---|"]
    for r in results:
        rate = r.get("events_per_s")
        other = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                          if k not in ("side", "events_per_s", "cpu_s_per_1k"))
        lines.append(f"| {r['side']} | {f'{rate:,.0f}' if rate else ''} | "
                     f"{f'{rate / ceiling:.2f}x' if rate and ceiling else ''} | "
                     f"{f'{rate / telegraf:.2f}x' if rate and telegraf else ''} | "
                     f"{r['cpu_s_per_1k']:.3f} | {other} |" if "cpu_s_per_1k" in r else
                     f"| {r['side']} | {f'{rate:,.0f}' if rate else ''} | | | | {other} |")
    table = "\n".join(lines)
    print(table, flush=True)
    return table


def pyplot():
    """matplotlib's pyplot, drawing to files; None (and a line saying so) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return None
    return plt


def plot(results: list[dict], out: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    drains = [r for r in results if "events_per_s" in r]
    fresh = [r for r in results if r.get("freshness_p50_s") is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.barh([r["side"] for r in drains], [r["events_per_s"] for r in drains])
    left.set_xlabel("events/s (same topic)")
    names = [r["side"].removeprefix("(e) freshness at ") for r in fresh]
    for offset, key in ((-0.2, "freshness_p50_s"), (0.0, "freshness_p95_s"), (0.2, "job_metric_p95_s")):
        right.bar([i + offset for i in range(len(fresh))], [r[key] or 0 for r in fresh], width=0.2, label=key)
    right.set_xticks(range(len(fresh)), names)
    right.set_ylabel("seconds from send to InfluxDB")
    right.legend()
    fig.tight_layout()
    fig.savefig(out / "side_by_side.png")
    print(f"plot: {out / 'side_by_side.png'}")
