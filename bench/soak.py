"""Soak benchmark: a steady mixed load on the whole stack for ``--minutes`` (30), sampled
every 10 s.

The stack (:mod:`bench.soak_stack`): a real nats-server, the llm, memory, planner, coder,
reviewer agents and the edge, each its own process as ``sophia up`` runs them, a ``soak``
work agent (:mod:`bench.soak_worker`), and a scripted OpenAI-compatible model. The load
(:mod:`bench.soak_load`): memory stores and searches on the bus, ``memory_search`` through the
edge from the ``mcp`` SDK's client, durable work items, and a coding task every 30 s.

Every 10 s one CSV row: the load average; each process's RSS, open files and CPU, and the
machine's busy and stolen CPU (/proc); each work
consumer's lag (``num_pending + num_ack_pending``); each operation's calls, errors and p95 over
those 10 s. At the end, under ``--out`` (``bench/out/``): ``soak.csv``, ``latencies.csv``
(every call), ``soak.png``, ``soak.json``, and on stdout the summary with the verdicts of
:mod:`bench.soak_report` (memory growth over the last 20 minutes < 5 %, p95 flat within 20 %,
error rate < 0.1 %). The baseline is the run itself: its judged window against its own start.

Every store is a new note. Past ``--keep-notes`` (600, ten minutes of stores) each store is
followed by a delete of the oldest note, so through the judged window the memory agent holds
a steady amount of data and its RSS growth measures what it keeps, not what it was given.
``--keep-notes 0`` keeps every note, and the memory agent's data grows with the run. A search
of a new query holds about 1.9 KiB in L1 until it expires (``SOPHIA_L1_TTL_S``, 600 s: the
judged window starts when the first ones do) or L1 reaches ``SOPHIA_L1_MAX_ITEMS``.

    python bench/soak.py [--minutes 30] [--out bench/out] [--keep-notes 600]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.soak_load import KEEP_NOTES, OPERATIONS, Load, Recorder  # noqa: E402
from bench.soak_report import (  # noqa: E402
    percentile,
    plot,
    summarize,
    write_csv,
    write_latencies,
)
from bench.soak_sample import (  # noqa: E402
    CpuMeter,
    consumer_lag,
    open_files,
    resident_mb,
    stream_sizes,
)
from bench.soak_stack import Stack, running_stack  # noqa: E402
from bus.runner import backend_options  # noqa: E402

SAMPLE_S = 10.0
WORK_CONSUMERS = ["tasks", "coder", "reviewer", "soak"]


class Sampler:
    """Builds one row per ``SAMPLE_S`` from /proc, JetStream and the recorder."""

    def __init__(self, stack: Stack, recorder: Recorder, load: Load) -> None:
        self.stack = stack
        self.recorder = recorder
        self.load = load
        self.rows: list[dict[str, Any]] = []
        self._seen_latencies = 0
        self._seen_errors = 0
        self.crashed: dict[str, int] = {}
        self.cpu = CpuMeter(stack.pids)

    async def row(self) -> dict[str, Any]:
        self.load.work.sweep()
        row: dict[str, Any] = {
            "t_s": round(self.recorder.now(), 1),
            "load_1m": round(os.getloadavg()[0], 2),
        }
        pids = self.stack.pids
        resident = {name: resident_mb(pid) for name, pid in pids.items()}
        for part in ("rss", "anon", "file"):
            for name in pids:
                row[f"{part}_mb_{name}"] = round(resident[name][part], 1)
            row[f"{part}_mb_total"] = round(sum(row[f"{part}_mb_{n}"] for n in pids), 1)
        for name, pid in pids.items():
            row[f"fds_{name}"] = open_files(pid)
        row |= self.cpu.sample()
        lag = await consumer_lag(self.stack.bus, WORK_CONSUMERS)
        for name, value in lag.items():
            row[f"lag_{name}"] = value
        row["lag_total"] = sum(v for v in lag.values() if v > 0)
        row |= await stream_sizes(self.stack.bus)
        latencies = self.recorder.latencies[self._seen_latencies :]
        errors = self.recorder.errors[self._seen_errors :]
        self._seen_latencies += len(latencies)
        self._seen_errors += len(errors)
        for op in OPERATIONS:
            mine = [lat for _, o, lat in latencies if o == op]
            row[f"n_{op}"] = len(mine)
            row[f"err_{op}"] = sum(1 for _, o, _ in errors if o == op)
            row[f"p95_ms_{op}"] = round(percentile(mine, 0.95) * 1000, 2) if mine else ""
        row["errors"] = len(errors)
        self.crashed |= self.stack.exited()
        return row

    async def sample(self) -> None:
        self.rows.append(await self.row())
        last = self.rows[-1]
        print(
            f"t={last['t_s']:7.1f}s load={last['load_1m']:.2f} "
            f"rss={last['rss_mb_total']:.0f}MiB lag={last['lag_total']} "
            f"errors={last['errors']}",
            file=sys.stderr,
            flush=True,
        )

    async def run(self) -> None:
        """A row every ``SAMPLE_S`` until cancelled."""
        due = self.recorder.now() + SAMPLE_S
        while True:
            await anyio.sleep(max(0.0, due - self.recorder.now()))
            await self.sample()
            due += SAMPLE_S


async def run(args: argparse.Namespace) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)
    async with running_stack(args.out) as stack:
        recorder = Recorder()
        load = Load(stack, recorder, keep_notes=args.keep_notes)
        until = args.minutes * 60
        sampler = Sampler(stack, recorder, load)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sampler.run)
            await load.run(until)
            tg.cancel_scope.cancel()
        if recorder.now() - sampler.rows[-1]["t_s"] > 1.0:
            await sampler.sample()  # the last row: after the load and its work items ended
        run_s = sampler.rows[-1]["t_s"]
        processes = list(stack.pids)
    summary = summarize(sampler.rows, recorder, run_s, processes, list(OPERATIONS), WORK_CONSUMERS)
    summary["crashed"] = sampler.crashed
    summary["cpus"] = os.cpu_count()
    summary["rates_per_s"] = OPERATIONS
    summary["keep_notes"] = args.keep_notes
    summary["outputs"] = {
        name: str(args.out / name)
        for name in ("soak.csv", "latencies.csv", "soak.png", "soak.json", "logs")
    }
    write_csv(sampler.rows, args.out / "soak.csv")
    write_latencies(recorder, args.out / "latencies.csv")
    plot(sampler.rows, summary, processes, list(OPERATIONS), args.out / "soak.png")
    (args.out / "soak.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


async def run_until_signalled(args: argparse.Namespace) -> dict[str, Any] | None:
    """:func:`run`, cancelled by SIGTERM or SIGINT so that the stack it started is stopped
    (its processes SIGTERM'd and waited for, nats-server stopped); ``None`` when signalled."""
    summary: dict[str, Any] | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_on_signal, tg.cancel_scope)
        summary = await run(args)
        tg.cancel_scope.cancel()
    return summary


async def cancel_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            print(f"soak: {signal.Signals(signum).name}, stopping the stack", file=sys.stderr)
            scope.cancel()
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the load")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="output folder")
    parser.add_argument(
        "--keep-notes",
        type=int,
        default=KEEP_NOTES,
        help="notes held: past this many, each store is followed by a delete of the oldest "
        "(0: keep every note, and the memory grows with them)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    summary = anyio.run(
        run_until_signalled, args, backend="asyncio", backend_options=backend_options()
    )
    if summary is None:
        sys.exit(128 + signal.SIGTERM)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
