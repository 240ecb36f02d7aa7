"""The soak's figures: one CSV row per 10 s sample, the verdicts the issue sets, the plot.

Verdicts, over the **judged window**: the last 20 minutes of the run (the last two thirds of a
run shorter than 30 minutes), so start-up (imports, the embedder's first runs, caches filling)
is left out:

- ``memory_growth_pct``: the summed RSS of every process of the stack (agents, edge,
  nats-server), median of the window's first minute against median of its last minute; < 5 %.
  Each process's own growth is listed too, and, beside the verdict (which stays on the whole
  RSS), its two parts: ``anon_growth_pct`` (anonymous memory: the heaps, where a leak shows)
  and ``file_mb_judged_first_last`` (pages of mapped files, which the kernel can reclaim).
- ``p95_flat``: for each operation, the p95 of all its latencies in the window's first quarter
  (5 minutes) against the p95 in its last quarter; flat when the larger over the smaller is at
  most 1.2 (within 20 %). The max/min of the per-minute p95 in the window is listed as well
  (with a handful of calls a minute it says more about noise than about a trend), with
  ``rose_over_20_pct`` (the last quarter's p95 above 1.2 x the first's: a slowdown, not just a
  change) and the median load average of both quarters, since the machine may be shared.
- ``error_rate``: errors over calls, every operation and the whole run; < 0.1 %.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

from bench.soak_load import Recorder

JUDGED_MIN = 20.0
GROWTH_LIMIT_PCT = 5.0
FLAT_LIMIT = 1.2
ERROR_LIMIT = 0.001


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def judged_window(run_s: float) -> tuple[float, float]:
    """(start, end) of the judged window in seconds since the start."""
    length = min(JUDGED_MIN * 60, run_s * 2 / 3)
    return run_s - length, run_s


def growth(rows: list[dict[str, Any]], column: str, start: float, end: float) -> float | None:
    """Percent change of ``column``: median of the window's first minute to its last."""
    first = [r[column] for r in rows if start <= r["t_s"] < start + 60]
    last = [r[column] for r in rows if end - 60 <= r["t_s"] <= end]
    if not first or not last or not statistics.median(first):
        return None
    return round((statistics.median(last) / statistics.median(first) - 1) * 100, 2)


def flatness(recorder: Recorder, op: str, start: float, end: float) -> dict[str, Any]:
    quarter = (end - start) / 4
    head = [lat for at, o, lat in recorder.latencies if o == op and start <= at < start + quarter]
    tail = [lat for at, o, lat in recorder.latencies if o == op and end - quarter <= at <= end]
    out: dict[str, Any] = {"calls_first": len(head), "calls_last": len(tail)}
    if not head or not tail:
        return out | {"flat": False}
    first, last = percentile(head, 0.95), percentile(tail, 0.95)
    spread = max(first, last) / min(first, last)
    per_minute = window_p95s(recorder, op, start, end, 60.0)
    return out | {
        "p95_ms_first": round(first * 1000, 2),
        "p95_ms_last": round(last * 1000, 2),
        "last_over_first": round(last / first, 3),
        "flat": spread <= FLAT_LIMIT,
        "rose_over_20_pct": last > first * FLAT_LIMIT,
        "per_minute_p95_max_over_min": round(max(per_minute) / min(per_minute), 2),
    }


def quarter_medians(
    rows: list[dict[str, Any]], column: str, start: float, end: float
) -> list[float]:
    """Median of ``column`` in the judged window's first and last quarter (the machine is
    shared: a p95 that moves with the load or the stolen CPU moved with them, not with the
    run's age)."""
    quarter = (end - start) / 4
    head = [r[column] for r in rows if start <= r["t_s"] < start + quarter]
    tail = [r[column] for r in rows if end - quarter <= r["t_s"] <= end]
    return [statistics.median(head) if head else 0.0, statistics.median(tail) if tail else 0.0]


def window_p95s(
    recorder: Recorder, op: str, start: float, end: float, window_s: float
) -> list[float]:
    """The p95 of ``op`` in each ``window_s`` from ``start`` to ``end``, in seconds, in order:
    whether a change between the quarters is a trend or a swing."""
    windows: dict[int, list[float]] = {}
    for at, o, lat in recorder.latencies:
        if o == op and start <= at <= end:
            windows.setdefault(int((at - start) // window_s), []).append(lat)
    return [percentile(windows[k], 0.95) for k in sorted(windows)]


def write_latencies(recorder: Recorder, path: Path) -> None:
    """Every call's outcome, so a verdict can be recomputed another way later."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["t_s", "operation", "latency_ms", "error"])
        for at, op, latency in recorder.latencies:
            writer.writerow([round(at, 3), op, round(latency * 1000, 3), ""])
        for at, op, what in recorder.errors:
            writer.writerow([round(at, 3), op, "", what])


def summarize(
    rows: list[dict[str, Any]],
    recorder: Recorder,
    run_s: float,
    processes: list[str],
    operations: list[str],
    consumers: list[str],
) -> dict[str, Any]:
    start, end = judged_window(run_s)
    calls = {op: sum(1 for _, o, _ in recorder.latencies if o == op) for op in operations}
    errors = {op: sum(1 for _, o, _ in recorder.errors if o == op) for op in operations}
    total_calls = sum(calls.values()) + sum(errors.values())
    error_rate = sum(errors.values()) / total_calls if total_calls else 1.0
    total_growth = growth(rows, "rss_mb_total", start, end)
    flat = {op: flatness(recorder, op, start, end) for op in operations}
    judged = [r for r in rows if r["t_s"] >= start]
    loads = [r["load_1m"] for r in rows]
    verdicts = {
        "memory_growth_under_5_pct": total_growth is not None and total_growth < GROWTH_LIMIT_PCT,
        "p95_flat_within_20_pct": all(f["flat"] for f in flat.values()),
        "error_rate_under_0_1_pct": error_rate < ERROR_LIMIT,
    }
    return {
        "run_s": round(run_s, 1),
        "judged_window_s": [round(start, 1), round(end, 1)],
        "samples": len(rows),
        "memory_growth_pct": total_growth,
        "rss_mb_total": {"first": rows[0]["rss_mb_total"], "last": rows[-1]["rss_mb_total"]},
        "memory_growth_pct_per_process": {
            p: growth(rows, f"rss_mb_{p}", start, end) for p in processes
        },
        "anon_growth_pct": growth(rows, "anon_mb_total", start, end),
        "anon_growth_pct_per_process": {
            p: growth(rows, f"anon_mb_{p}", start, end) for p in processes
        },
        "file_mb_judged_first_last": {
            p: [judged[0][f"file_mb_{p}"], judged[-1][f"file_mb_{p}"]] for p in processes
        },
        "streams_judged_first_last": {
            key: [judged[0][key], judged[-1][key]]
            for key in judged[0]
            if key.startswith(("msgs_", "mb_"))
        },
        "rss_mb_last": {p: rows[-1][f"rss_mb_{p}"] for p in processes},
        "open_files_judged_first_last": {
            p: [judged[0][f"fds_{p}"], judged[-1][f"fds_{p}"]] for p in processes
        },
        "consumer_lag_max_judged": {
            c: max(r[f"lag_{c}"] for r in judged) for c in [*consumers, "total"]
        },
        "consumer_lag_last": rows[-1]["lag_total"],
        "p95": flat,
        "load_avg_1m_first_last_quarter": quarter_medians(rows, "load_1m", start, end),
        "cpu_busy_pct_first_last_quarter": quarter_medians(rows, "cpu_busy_pct", start, end),
        "cpu_steal_pct_first_last_quarter": quarter_medians(rows, "cpu_steal_pct", start, end),
        "p95_ms_per_150_s": {
            op: [round(p95 * 1000, 1) for p95 in window_p95s(recorder, op, start, end, 150.0)]
            for op in operations
        },
        "calls": calls,
        "errors": errors,
        "error_rate": round(error_rate, 6),
        "error_examples": sorted({what for _, _, what in recorder.errors})[:5],
        "load_avg_1m": {
            "min": min(loads),
            "median": statistics.median(loads),
            "max": max(loads),
        },
        "verdicts": verdicts,
        "met": all(verdicts.values()),
    }


def plot(
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    processes: list[str],
    operations: list[str],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["t_s"] / 60 for r in rows]
    start = summary["judged_window_s"][0] / 60
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), dpi=110, sharex=True)
    (rss, p95), (fds, lag) = axes
    for p in processes:
        rss.plot(minutes, [r[f"rss_mb_{p}"] for r in rows], label=p)
        fds.plot(minutes, [r[f"fds_{p}"] for r in rows], label=p)
    rss.set_ylabel("RSS (MiB)")
    rss.set_title(f"Resident memory (judged window growth {summary['memory_growth_pct']} %)")
    fds.set_ylabel("open file descriptors")
    fds.set_title("Open files")
    for op in operations:
        points = [(m, r[f"p95_ms_{op}"]) for m, r in zip(minutes, rows, strict=True)]
        points = [(m, v) for m, v in points if v != ""]
        if points:
            p95.plot(*zip(*points, strict=True), label=op, marker=".", linewidth=0.8)
    p95.set_yscale("log")
    p95.set_ylabel("p95 per 10 s window (ms)")
    p95.set_title("Latency p95 by operation")
    lag.plot(minutes, [r["lag_total"] for r in rows], label="consumer lag (pending + unacked)")
    lag.plot(minutes, [r["errors"] for r in rows], label="errors in window", color="red")
    lag.set_ylabel("items")
    lag.set_title(f"Consumer lag and errors (error rate {summary['error_rate']:.4%})")
    for ax in axes.flat:
        ax.axvspan(start, minutes[-1], color="grey", alpha=0.08)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    for ax in axes[1]:
        ax.set_xlabel("minutes (shaded: judged window)")
    load = summary["load_avg_1m"]
    fig.suptitle(
        f"Sophia soak: {summary['run_s'] / 60:.0f} min of mixed load, "
        f"load average {load['min']:.1f}-{load['max']:.1f} on {summary.get('cpus', '?')} cores"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
