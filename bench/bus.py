"""Bus benchmark: the Agent runtime against raw nats-py, in one run, on one nats-server.

Prints one JSON object. Request/reply: a raw nats-py echo responder vs an Agent
endpoint (msgspec validation, tracing on with no exporter), each in its own process,
driven by the same client — sequentially (round trip) and at concurrency 64
(throughput). The client side too: ``Bus.request_raw`` (the bus's reply mux) against
nats-py's own ``request``, both asking the raw responder (``client_*``). Durable work: a
raw nats-py JetStream pull consumer vs Agent durable work, each draining the same number of
pre-published items. Measured with uvloop
(when installed) and with the default asyncio loop; rounds alternate raw and agent.
Figures are medians over rounds; each ratio is the median of the rounds' own ratios.

    python bench/bus.py [--requests 3000] [--items 20000] [--rounds 5]
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
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import nats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bus import Agent, Bus, Settings, endpoint, work  # noqa: E402
from bus.topology import ensure_streams  # noqa: E402
from ops.natsserver import NatsServer  # noqa: E402

PAYLOAD = b'{"text": "hello world", "n": 1}'
CONCURRENCY = 64


class EchoRequest(msgspec.Struct, kw_only=True):
    text: str
    n: int = 0


class Item(msgspec.Struct, kw_only=True):
    id: int
    text: str


class BenchAgent(Agent, name="bench"):
    """Echo endpoint and a no-op durable-work handler, for the benchmark."""

    @endpoint
    async def echo(self, req: EchoRequest) -> EchoRequest:
        """Return the request."""
        return req

    expect = 0
    first = 0.0
    handled = 0

    @work
    async def take(self, item: Item) -> None:
        if not self.handled:
            self.first = time.perf_counter()
        self.handled += 1
        if self.handled == self.expect:
            self._reporter = asyncio.get_running_loop().create_task(self._report())

    async def _report(self) -> None:
        import anyio

        while self._consumer is None or self._consumer.acked < self.expect:  # noqa: ASYNC110
            await anyio.sleep(0.001)
        print(f"rate {self.expect / (time.perf_counter() - self.first)}", flush=True)


# ---- responder processes -----------------------------------------------------------------


async def serve_raw(url: str, subject: str) -> None:
    nc = await nats.connect(url)

    async def echo(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(msg.data)

    await nc.subscribe(subject, queue="raw", cb=echo)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def serve_agent(url: str, prefix: str, expect: int) -> None:
    import anyio

    agent = BenchAgent(Settings(nats_url=url, prefix=prefix))
    agent.expect = expect
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        print("ready", flush=True)
        await anyio.sleep_forever()


def progress(event: str) -> None:
    print(event, file=sys.stderr, flush=True)


def run_loop(coro_fn, *args, uvloop_on: bool):  # type: ignore[no-untyped-def]
    """Run ``coro_fn(*args)`` on uvloop or on the default asyncio loop."""
    if uvloop_on:
        import uvloop

        return uvloop.run(coro_fn(*args))
    return asyncio.run(coro_fn(*args))


def spawn(
    kind: str, url: str, name: str, uvloop_on: bool, expect: int = 0
) -> subprocess.Popen[str]:
    cmd = [sys.executable, __file__, "--serve", kind, "--url", url, "--name", name]
    cmd += ["--expect", str(expect)]
    if uvloop_on:
        cmd.append("--uvloop")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{kind} responder did not start")
    return proc


# ---- load generation ---------------------------------------------------------------------


Requester = Callable[[str, bytes, float], Awaitable[object]]


def raw_requester(nc: nats.NATS) -> Requester:
    async def request(subject: str, payload: bytes, timeout: float) -> object:
        return await nc.request(subject, payload, timeout=timeout)

    return request


def bus_requester(nc: nats.NATS, url: str) -> Requester:
    """Requests through the bus's client side (its reply mux), on the same connection."""
    bus = Bus(nc, Settings(nats_url=url))

    async def request(subject: str, payload: bytes, timeout: float) -> object:
        return await bus.request_raw(subject, payload, timeout=timeout)

    return request


async def round_trips(request: Requester, subject: str, count: int) -> float:
    """Median round trip in microseconds over ``count`` sequential requests."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await request(subject, PAYLOAD, 5)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


async def throughput(request: Requester, subject: str, count: int) -> float:
    """Requests per second with CONCURRENCY callers sharing ``count`` requests."""
    remaining = count

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await request(subject, PAYLOAD, 10)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    return count / (time.perf_counter() - start)


async def fill(js: nats.js.JetStreamContext, subject: str, items: int) -> None:
    batch = []
    for i in range(items):
        body = msgspec.json.encode(Item(id=i, text="work item payload"))
        batch.append(js.publish(subject, body, headers={"Nats-Msg-Id": f"{subject}-{i}"}))
        if len(batch) == 500:
            await asyncio.gather(*batch)
            batch = []
    await asyncio.gather(*batch)


async def raw_consume(nc: nats.NATS, stream: str, subject: str, items: int) -> float:
    """Items per second for a plain nats-py pull consumer: fetch batches, ack each."""
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[subject], retention="workqueue")
    await fill(js, subject, items)
    psub = await js.pull_subscribe(subject, durable="raw", stream=stream)
    done = 0
    start = 0.0
    while done < items:
        for msg in await psub.fetch(64, timeout=5):
            start = start or time.perf_counter()
            await msg.ack()
            done += 1
    rate = items / (time.perf_counter() - start)
    await psub.unsubscribe()
    await js.delete_stream(stream)
    return rate


async def agent_consume(nc: nats.NATS, url: str, prefix: str, items: int, uvloop_on: bool) -> float:
    """Items per second for Agent durable work (the agent in its own process)."""
    settings = Settings(nats_url=url, prefix=prefix)
    js = nc.jetstream()
    await ensure_streams(js, settings)
    subject = f"{prefix}.work.bench"
    await fill(js, subject, items)
    proc = spawn("agent", url, prefix, uvloop_on, expect=items)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 300)
        rate = float(line.split()[1])
    finally:
        proc.terminate()
        proc.wait(20)
    return rate


async def measure(url: str, args: argparse.Namespace, uvloop_on: bool) -> dict[str, float]:
    nc = await nats.connect(url)
    tag = "u" if uvloop_on else "a"  # streams and msg ids of one loop's run stay apart
    raw_subject, agent_prefix = f"bench{tag}.raw.echo", f"benchrr{tag}"
    raw = spawn("raw", url, raw_subject, uvloop_on)
    agent = spawn("agent", url, agent_prefix, uvloop_on)
    agent_subject = f"{agent_prefix}.bench.echo"
    keys = ("rr", "ar", "cr", "rp", "ap", "cp", "rw", "aw")
    results: dict[str, list[float]] = {k: [] for k in keys}
    raw_client, bus_client = raw_requester(nc), bus_requester(nc, url)
    try:
        await round_trips(raw_client, raw_subject, 300)  # warm every path
        await round_trips(raw_client, agent_subject, 300)
        await round_trips(bus_client, raw_subject, 300)
        for _ in range(args.rounds):
            progress("round_trips")
            results["rr"].append(await round_trips(raw_client, raw_subject, args.requests))
            results["ar"].append(await round_trips(raw_client, agent_subject, args.requests))
            results["cr"].append(await round_trips(bus_client, raw_subject, args.requests))
            results["rp"].append(await throughput(raw_client, raw_subject, args.requests * 3))
            results["ap"].append(await throughput(raw_client, agent_subject, args.requests * 3))
            results["cp"].append(await throughput(bus_client, raw_subject, args.requests * 3))
    finally:
        raw.terminate()
        agent.terminate()
        raw.wait(20)
        agent.wait(20)
    for r in range(args.rounds):
        progress("work")
        results["rw"].append(
            await raw_consume(nc, f"RAWW{tag}{r}", f"raww{tag}{r}.items", args.items)
        )
        progress("agent_work")
        results["aw"].append(await agent_consume(nc, url, f"bw{tag}{r}", args.items, uvloop_on))
    await nc.drain()
    med = {k: statistics.median(v) for k, v in results.items()}

    def ratio(agent: str, raw: str) -> float:
        """The median of each round's ratio: raw and agent of one round ran seconds apart,
        so they saw the same background load on a shared machine."""
        pairs = zip(results[agent], results[raw], strict=True)
        return round(statistics.median(a / r for a, r in pairs), 3)

    return {
        "raw_rtt_us": round(med["rr"], 1),
        "agent_rtt_us": round(med["ar"], 1),
        "rtt_ratio": ratio("ar", "rr"),
        "raw_rps": round(med["rp"]),
        "agent_rps": round(med["ap"]),
        "rps_ratio": ratio("ap", "rp"),
        "bus_client_rtt_us": round(med["cr"], 1),
        "client_rtt_ratio": ratio("cr", "rr"),
        "bus_client_rps": round(med["cp"]),
        "client_rps_ratio": ratio("cp", "rp"),
        "raw_work_per_s": round(med["rw"]),
        "agent_work_per_s": round(med["aw"]),
        "work_ratio": ratio("aw", "rw"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", choices=["raw", "agent"])
    parser.add_argument("--url")
    parser.add_argument("--name")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--expect", type=int, default=0)
    args = parser.parse_args()
    if args.serve == "raw":
        run_loop(serve_raw, args.url, args.name, uvloop_on=args.uvloop)
        return
    if args.serve == "agent":
        run_loop(serve_agent, args.url, args.name, args.expect, uvloop_on=args.uvloop)
        return
    try:
        import uvloop  # noqa: F401

        have_uvloop = True
    except ImportError:
        have_uvloop = False
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js", log_file=Path(tmp) / "nats.log")
        server.start()
        try:
            report: dict[str, object] = {}
            if have_uvloop:
                report.update(run_loop(measure, server.url, args, True, uvloop_on=True))
                report["loop"] = "uvloop"
            asyncio_figures = run_loop(measure, server.url, args, False, uvloop_on=False)
            if have_uvloop:
                report["asyncio"] = asyncio_figures
            else:
                report.update(asyncio_figures)
                report["loop"] = "asyncio"
            report.update(
                cpus=os.cpu_count(),
                concurrency=CONCURRENCY,
                requests=args.requests,
                items=args.items,
                rounds=args.rounds,
                tracing="on, no exporter",
            )
        finally:
            server.stop()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
