"""Metrics benchmark: what OpenTelemetry metrics cost a request, on against off, in one run.

Prints one JSON object. Two agent processes serve the same echo endpoint on one nats-server,
one with metrics on (``SOPHIA_METRICS_BIND=127.0.0.1:0``, the default: a histogram record per
request, the Prometheus endpoint up) and one with them off; the same raw nats-py client drives
both, sequentially (round trip) and at concurrency 64 (throughput), rounds alternating which
goes first. A scrape of the on process runs between rounds, as Prometheus would. Figures are
medians over rounds; each ratio is the median of the rounds' own ratios (both sides of a round
ran seconds apart, so they saw the same load on a shared machine).

    python bench/metrics.py [--requests 3000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import nats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bus import BenchAgent, raw_requester, round_trips, throughput  # noqa: E402
from bus import Settings  # noqa: E402
from ops.natsserver import NatsServer  # noqa: E402


async def serve(url: str, prefix: str, bind: str, home: str) -> None:
    import anyio

    agent = BenchAgent(Settings(nats_url=url, prefix=prefix, metrics_bind=bind, home=home))
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        print("ready", flush=True)
        await anyio.sleep_forever()


def spawn(url: str, prefix: str, bind: str, home: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, __file__, "--serve", bind, "--url", url, "--prefix", prefix]
    proc = subprocess.Popen([*cmd, "--home", home], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the agent with metrics {bind} did not start")
    return proc


def scrape_url(home: str) -> str:
    """The /metrics address the process registered under ``home`` (bus/metrics.py)."""
    (entry,) = json.loads(next(Path(home, "metrics").glob("*.json")).read_text())
    return f"http://{entry['targets'][0]}/metrics"


async def measure(url: str, args: argparse.Namespace, home: Path) -> dict[str, object]:
    on_home, off_home = str(home / "on"), str(home / "off")
    on = spawn(url, "benchon", "127.0.0.1:0", on_home)
    off = spawn(url, "benchoff", "off", off_home)
    nc = await nats.connect(url)
    request = raw_requester(nc)
    sides = {"on": "benchon.bench.echo", "off": "benchoff.bench.echo"}
    rtt: dict[str, list[float]] = {"on": [], "off": []}
    rps: dict[str, list[float]] = {"on": [], "off": []}
    scrape_bytes = 0
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            metrics_url = scrape_url(on_home)
            for subject in sides.values():
                await round_trips(request, subject, 300)  # warm both
            for r in range(args.rounds):
                order = ["on", "off"] if r % 2 == 0 else ["off", "on"]
                for side in order:
                    rtt[side].append(await round_trips(request, sides[side], args.requests))
                for side in order:
                    rps[side].append(await throughput(request, sides[side], args.requests * 3))
                scrape_bytes = len((await http.get(metrics_url)).content)
    finally:
        await nc.drain()
        for proc in (on, off):
            proc.terminate()
            proc.wait(20)

    def ratio(values: dict[str, list[float]]) -> float:
        return round(
            statistics.median(a / b for a, b in zip(values["on"], values["off"], strict=True)), 3
        )

    return {
        "rounds": args.rounds,
        "requests_per_round": args.requests,
        "rtt_us_metrics_off": round(statistics.median(rtt["off"]), 1),
        "rtt_us_metrics_on": round(statistics.median(rtt["on"]), 1),
        "rtt_ratio_on_over_off": ratio(rtt),
        "rps_metrics_off": round(statistics.median(rps["off"])),
        "rps_metrics_on": round(statistics.median(rps["on"])),
        "rps_ratio_on_over_off": ratio(rps),
        "scrape_bytes": scrape_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--serve")
    parser.add_argument("--url")
    parser.add_argument("--prefix")
    parser.add_argument("--home")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.url, args.prefix, args.serve, args.home))
        return
    with tempfile.TemporaryDirectory(prefix="sophia-bench-metrics-") as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js", log_file=Path(tmp) / "nats.log")
        server.start()
        try:
            result = asyncio.run(measure(server.url, args, Path(tmp)))
        finally:
            server.stop()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
