"""What recording spans costs: bus requests with span files on against nothing recorded.

Prints one JSON object. Each round starts an echo agent process and a client process, both
with ``SOPHIA_TRACE_FILES`` ``off`` (the baseline: no SDK, only ``traceparent`` travels) or
``on`` (the SDK records a span per message sent and handled, and writes them under
``$SOPHIA_HOME/traces`` as ``sophia up``'s programs do); rounds alternate the two on one
nats-server. The client measures sequential round trips and throughput at concurrency 64.
Figures are medians over rounds; each ratio is the median of the rounds' own ratios.

    python bench/tracing.py [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bus import Agent, Bus, Settings, endpoint  # noqa: E402
from bus import tracing as bus_tracing  # noqa: E402
from bus.config import load  # noqa: E402
from bus.connection import Link, connect  # noqa: E402
from ops.natsserver import NatsServer  # noqa: E402

CONCURRENCY = 64
PREFIX = "benchtrace"


class Echo(msgspec.Struct, kw_only=True):
    text: str
    n: int = 0


class EchoAgent(Agent, name="echo"):
    """Answers with the request."""

    @endpoint
    async def say(self, req: Echo) -> Echo:
        """Return the request."""
        return req


async def serve() -> None:
    import anyio

    async with anyio.create_task_group() as tg:
        await tg.start(EchoAgent(load(Settings)).run)
        print("ready", flush=True)
        await anyio.sleep_forever()


async def drive(requests: int) -> None:
    """Sequential round trips, then ``requests * 3`` at concurrency 64; prints JSON."""
    settings = load(Settings)
    bus_tracing.configure("client", settings)
    nc = await connect(settings, "bench-client", Link())
    bus = Bus(nc, settings)
    req = Echo(text="hello world", n=1)
    for _ in range(200):  # warm every path
        await bus.request("echo", "say", req, Echo)
    started = time.perf_counter()
    for _ in range(requests):
        await bus.request("echo", "say", req, Echo)
    rtt_us = (time.perf_counter() - started) / requests * 1e6
    left = requests * 3

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await bus.request("echo", "say", req, Echo)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    rps = requests * 3 / (time.perf_counter() - started)
    await nc.drain()
    bus_tracing.shutdown()
    print(json.dumps({"rtt_us": rtt_us, "rps": rps}), flush=True)


def one_round(url: str, home: Path, mode: str, requests: int) -> dict[str, float]:
    env = {
        **os.environ,
        "SOPHIA_NATS_URL": url,
        "SOPHIA_PREFIX": PREFIX,
        "SOPHIA_HOME": str(home),
        "SOPHIA_TRACE_FILES": mode,
        "SOPHIA_METRICS_BIND": "off",
    }
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    me = [sys.executable, __file__]
    server = subprocess.Popen([*me, "--serve"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        out = subprocess.run(
            [*me, "--drive", str(requests)], env=env, capture_output=True, text=True, check=True
        )
    finally:
        server.terminate()
        server.wait(30)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--drive", type=int)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
        return
    if args.drive:
        asyncio.run(drive(args.drive))
        return
    rounds: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js", log_file=Path(tmp) / "nats.log")
        server.start()
        try:
            for _ in range(args.rounds):
                for mode in ("off", "on"):
                    print(f"round {mode}", file=sys.stderr, flush=True)
                    rounds[mode].append(one_round(server.url, Path(tmp), mode, args.requests))
            recorded = sum(p.stat().st_size for p in (Path(tmp) / "traces").glob("*"))
        finally:
            server.stop()

    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in rounds[mode])

    def ratio(key: str) -> float:
        pairs = zip(rounds["on"], rounds["off"], strict=True)
        return round(statistics.median(on[key] / off[key] for on, off in pairs), 3)

    print(
        json.dumps(
            {
                "off_rtt_us": round(median("off", "rtt_us"), 1),
                "on_rtt_us": round(median("on", "rtt_us"), 1),
                "rtt_ratio": ratio("rtt_us"),
                "off_rps": round(median("off", "rps")),
                "on_rps": round(median("on", "rps")),
                "rps_ratio": ratio("rps"),
                "span_file_bytes": recorded,
                "cpus": os.cpu_count(),
                "concurrency": CONCURRENCY,
                "requests": args.requests,
                "rounds": args.rounds,
            }
        )
    )


if __name__ == "__main__":
    main()
