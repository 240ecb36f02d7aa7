"""Scale-out benchmark: 1, 2, 4, 8 replicas of an I/O-bound agent on the real bus.

The agent (:class:`ScaleAgent`, service ``scaleout``) has one ``@work`` handler that awaits
50 ms (an I/O-bound step: a model call, an HTTP call) and then publishes the item's number on
a core subject the benchmark listens to. Each replica is its own process (``python
bench/scaleout.py --role replica``, run through :func:`bus.runner.serve` like every agent),
all on one real nats-server, sharing the service's one durable pull consumer on
``SOPHIA_WORK``. A replica handles at most ``--inflight`` items at once
(``SOPHIA_WORK_MAX_INFLIGHT``, default 4), so one replica's ideal is ``inflight / 0.05`` =
80 items/s and N replicas' is N times that: replicas, not the handler, bound the throughput.

For each N the replicas are started and the benchmark waits until the consumer has N waiting
pull requests (every replica is pulling); then ``--seconds`` (15) of the ideal rate's items
are published (acknowledged JetStream publishes, 32 in flight) and every completion is
timestamped on arrival. ``throughput_per_s`` is measured between the 10th and the 90th
percentile of completions (start-up and tail excluded): ``0.8 * items / (t90 - t10)``.
Rounds (``--rounds``, 2) alternate the order (1, 2, 4, 8 then 8, 4, 2, 1), so a change of
load on the shared machine hits every N alike; a figure is the median over rounds, and
``ratio`` = throughput(N) / throughput(1), the target ``ratio >= 0.9 * N``.
``cpu_ms_per_item`` is the replicas' and the nats-server's CPU per item (from /proc).

Prints one JSON line per N and a summary object; writes ``scaleout.json`` and
``scaleout.png`` under ``--out`` (default ``bench/out/``).

    python bench/scaleout.py [--replicas 1,2,4,8] [--seconds 15] [--rounds 2] [--inflight 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
from nats.aio.msg import Msg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bus import Agent, Settings, work  # noqa: E402
from bus.client import Bus  # noqa: E402
from bus.config import load  # noqa: E402
from bus.runner import backend_options, serve  # noqa: E402
from bus.topology import ensure_consumer, ensure_streams  # noqa: E402
from ops.natsserver import NatsServer  # noqa: E402

HANDLER_S = 0.05
SERVICE = "scaleout"
PUBLISHERS = 32
READY_TIMEOUT_S = 60.0


class ScaleItem(msgspec.Struct, kw_only=True):
    n: int


class ScaleAgent(Agent, name=SERVICE):
    """An I/O-bound worker: each item awaits 50 ms, then says it is done."""

    @work
    async def handle(self, item: ScaleItem) -> None:
        await anyio.sleep(HANDLER_S)
        await self.nc.publish(done_subject(self.settings.prefix), str(item.n).encode())


def done_subject(prefix: str) -> str:
    return f"{prefix}.bench.scaleout.done"


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn_replicas(count: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    cmd = [sys.executable, __file__, "--role", "replica"]
    return [
        subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.DEVNULL) for _ in range(count)
    ]


def stop_replicas(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def wait_pulling(bus: Bus, replicas: int) -> None:
    """Until the service's consumer has ``replicas`` waiting pull requests."""
    stream, durable = bus.subjects.work_stream, bus.subjects.consumer(SERVICE)
    with anyio.fail_after(READY_TIMEOUT_S):
        while (await bus.js.consumer_info(stream, durable)).num_waiting < replicas:  # noqa: ASYNC110
            await anyio.sleep(0.2)


async def wait_drained(bus: Bus, limit_s: float) -> None:
    """Until the consumer has nothing pending or unacknowledged."""
    stream, durable = bus.subjects.work_stream, bus.subjects.consumer(SERVICE)
    with anyio.fail_after(limit_s):
        while True:
            info = await bus.js.consumer_info(stream, durable)
            if not info.num_pending and not info.num_ack_pending:
                return
            await anyio.sleep(0.2)


async def publish_items(bus: Bus, first: int, count: int) -> None:
    """``count`` acknowledged work items, ``PUBLISHERS`` publishes in flight."""
    numbers = iter(range(first, first + count))

    async def publisher() -> None:
        for n in numbers:
            await bus.submit_work(SERVICE, ScaleItem(n=n), msg_id=f"scale-{n}")

    async with anyio.create_task_group() as tg:
        for _ in range(PUBLISHERS):
            tg.start_soon(publisher)


async def measure(
    bus: Bus,
    env: dict[str, str],
    server_pid: int | None,
    replicas: int,
    args: argparse.Namespace,
    first: int,
) -> dict[str, Any]:
    """One N: start the replicas, run the items through them, stop them."""
    ideal = replicas * args.inflight / HANDLER_S
    count = int(ideal * args.seconds)
    arrivals: dict[int, float] = {}
    every = anyio.Event()

    async def on_done(msg: Msg) -> None:
        n = int(msg.data)
        if first <= n < first + count:
            arrivals.setdefault(n, time.perf_counter())
            if len(arrivals) == count:
                every.set()

    sub = await bus.nc.subscribe(done_subject(bus.settings.prefix), cb=on_done)
    procs = spawn_replicas(replicas, env)
    try:
        await wait_pulling(bus, replicas)
        pids = [p.pid for p in procs] + ([server_pid] if server_pid else [])
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        started = time.perf_counter()
        await publish_items(bus, first, count)
        published_s = time.perf_counter() - started
        with anyio.fail_after(max(60.0, args.seconds * 10)):
            await every.wait()
        cpu_spent = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        await wait_drained(bus, 30.0)
    finally:
        await sub.unsubscribe()
        await anyio.to_thread.run_sync(stop_replicas, procs)
    times = sorted(arrivals.values())
    low, high = times[int(0.1 * count)], times[int(0.9 * count) - 1]
    return {
        "replicas": replicas,
        "items": count,
        "throughput_per_s": round((int(0.9 * count) - int(0.1 * count)) / (high - low), 1),
        "ideal_per_s": ideal,
        "publish_s": round(published_s, 2),
        "makespan_s": round(times[-1] - started, 2),
        "cpu_ms_per_item": round(cpu_spent / count * 1000, 3),
    }


def round_orders(replicas: list[int], rounds: int) -> list[list[int]]:
    return [replicas if r % 2 == 0 else list(reversed(replicas)) for r in range(rounds)]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="sophia-bench-scaleout-"))
    server = NatsServer(store_dir=home / "nats")
    server.start()
    settings = Settings(nats_url=server.url, prefix=f"bs{uuid.uuid4().hex[:8]}", home=str(home))
    env = {
        **os.environ,
        "SOPHIA_NATS_URL": settings.nats_url,
        "SOPHIA_PREFIX": settings.prefix,
        "SOPHIA_HOME": str(home),
        "SOPHIA_LOG_LEVEL": "error",
        "SOPHIA_WORK_MAX_INFLIGHT": str(args.inflight),
        "PYTHONPATH": str(ROOT),
    }
    server_pid = server.process.pid if server.process is not None else None
    nc = await nats.connect(settings.nats_url, name="bench-scaleout")
    bus = Bus(nc, settings)
    rows: dict[int, list[dict[str, Any]]] = {n: [] for n in args.replicas}
    loads: list[float] = []
    try:
        await ensure_streams(bus.js, settings)
        await ensure_consumer(bus.js, settings, SERVICE)
        first = 0
        for order in round_orders(args.replicas, args.rounds):
            for replicas in order:
                row = await measure(bus, env, server_pid, replicas, args, first)
                first += row["items"]
                row["load_avg_1m"] = round(os.getloadavg()[0], 2)
                loads.append(row["load_avg_1m"])
                rows[replicas].append(row)
                print(json.dumps({"round": len(rows[replicas]), **row}), file=sys.stderr)
    finally:
        await nc.close()
        server.stop()
    return summarize(rows, args, loads)


def summarize(
    rows: dict[int, list[dict[str, Any]]], args: argparse.Namespace, loads: list[float]
) -> dict[str, Any]:
    one = statistics.median(r["throughput_per_s"] for r in rows[min(rows)])
    per_n = []
    for replicas, runs in sorted(rows.items()):
        throughput = statistics.median(r["throughput_per_s"] for r in runs)
        ratio = throughput / one
        per_n.append(
            {
                "replicas": replicas,
                "throughput_per_s": round(throughput, 1),
                "ratio": round(ratio, 3),
                "target_ratio": round(0.9 * replicas, 2),
                "met": ratio >= 0.9 * replicas,
                "ideal_per_s": runs[0]["ideal_per_s"],
                "cpu_ms_per_item": statistics.median(r["cpu_ms_per_item"] for r in runs),
                "rounds": [r["throughput_per_s"] for r in runs],
            }
        )
    return {
        "handler_s": HANDLER_S,
        "inflight_per_replica": args.inflight,
        "seconds_per_n": args.seconds,
        "rounds": args.rounds,
        "load_avg_1m": {"min": min(loads), "max": max(loads)},
        "cpu_count": os.cpu_count(),
        "per_n": per_n,
        "met": all(row["met"] for row in per_n),
    }


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_n = summary["per_n"]
    ns = [row["replicas"] for row in per_n]
    one = per_n[0]["throughput_per_s"] / per_n[0]["replicas"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.plot(ns, [row["throughput_per_s"] for row in per_n], "o-", label="measured (median)")
    ax.plot(ns, [one * n for n in ns], "--", color="grey", label="N x one replica")
    ax.plot(ns, [0.9 * one * n for n in ns], ":", color="red", label="target 0.9 N x one")
    for row in per_n:
        ax.annotate(
            f"{row['ratio']:.2f}x",
            (row["replicas"], row["throughput_per_s"]),
            textcoords="offset points",
            xytext=(6, -12),
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("replicas (separate processes)")
    ax.set_ylabel("work items / s")
    ax.set_title(
        f"Scale-out: handler awaits {int(HANDLER_S * 1000)} ms, "
        f"{summary['inflight_per_replica']} in flight per replica"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def replica_main() -> None:
    agent = ScaleAgent(load(Settings))
    anyio.run(serve, agent, backend="asyncio", backend_options=backend_options())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", default="1,2,4,8", help="replica counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=15.0, help="ideal seconds of items per N")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating the order")
    parser.add_argument("--inflight", type=int, default=4, help="items at once per replica")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="output folder")
    parser.add_argument("--role", choices=["replica"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "replica":
        replica_main()
        return
    args.replicas = sorted({int(n) for n in args.replicas.split(",")})
    summary = anyio.run(run, args, backend="asyncio", backend_options=backend_options())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaleout.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, args.out / "scaleout.png")
    for row in summary["per_n"]:
        print(json.dumps(row))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
