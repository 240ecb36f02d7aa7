"""Edge benchmark: MCP through the edge, the bus and an agent against the SDK's bare server.

Prints one JSON object. Every MCP figure comes from the ``mcp`` SDK's own client, the same
load generator on both sides:

- ``sdk_*``: a bare ``MCPServer`` with one trivial async tool and nothing behind it, in its
  best configuration (uvloop; HTTP with ``json_response=True``, stateful);
- ``mcp_*``: the edge (``sophia mcp`` over stdio, ``python -m edge`` over HTTP) calling a
  trivial endpoint of an agent over NATS;
- stdio runs sequential calls on one session; HTTP runs 8 concurrent sessions, and
  ``*_http_cpu_ms_*`` says how much CPU each process spent per call in its side's turns
  (``client`` is this process, the load generator); ``*_http_p50_ms``/``*_http_p95_ms`` are
  the latencies of those concurrent calls, and ``*_http_raw_p50_ms``/``*_http_raw_p95_ms``
  the same with 8 light clients (plain JSON-RPC POSTs over httpx: the SDK client spends about
  a millisecond of CPU per call, so 8 of them in one process measure mostly themselves);
- ``bus_p50_ms`` is the same request sent straight on the bus; ``mcp_added_p50_ms`` is the
  edge's stdio p50 over it; ``http_*`` is ``POST /v1/bench/echo`` (8 concurrent clients for
  the rate, sequential for the p50).

Both sides stay open for the whole run and take turns in short blocks (``--block`` calls;
who goes first alternates), so each pair of neighbouring blocks saw the same load on a shared
machine: a rate is the median of its side's block rates, a ratio the median of the block
pairs' ratios.

    python bench/edge.py [--calls 6000] [--block 100]
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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import msgspec
import nats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from bus import Agent, Settings, endpoint  # noqa: E402
from bus.client import Bus  # noqa: E402
from bus.runner import backend_options  # noqa: E402
from bus.topology import ensure_streams  # noqa: E402
from edge.tokens import create_token  # noqa: E402
from ops.natsserver import NatsServer, free_port, port_open  # noqa: E402

CONCURRENCY = 8
ARGS = {"text": "hello world"}
PAYLOAD = msgspec.json.encode(ARGS)


class EchoRequest(msgspec.Struct, kw_only=True):
    text: str


class EchoReply(msgspec.Struct, kw_only=True):
    text: str


class BenchAgent(Agent, name="bench"):
    """A trivial endpoint, so the edge's own cost shows."""

    @endpoint(public=True)
    async def echo(self, req: EchoRequest) -> EchoReply:
        """Return the text."""
        return EchoReply(text=req.text)


# ---- the processes under test ----------------------------------------------------------------


def bare_server() -> Any:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("bare", log_level="WARNING")

    @server.tool()
    async def echo(text: str) -> str:
        """Return the text."""
        return text

    return server


def role_main(role: str, port: int) -> None:
    """Run one process of the benchmark: the agent, or the bare SDK server."""
    opts = backend_options()
    if role == "agent":
        from bus.runner import serve

        anyio.run(serve, BenchAgent(), backend="asyncio", backend_options=opts)
    elif role == "bare-stdio":
        anyio.run(bare_server().run_stdio_async, backend="asyncio", backend_options=opts)
    elif role == "bare-http":
        server = bare_server()
        anyio.run(
            lambda: server.run_streamable_http_async(port=port, json_response=True),
            backend="asyncio",
            backend_options=opts,
        )


def spawn(role: str, env: dict[str, str], port: int = 0) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, __file__, "--role", role, "--port", str(port)]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)


def spawn_edge(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge"], env=env, cwd=ROOT, stderr=subprocess.DEVNULL
    )


async def wait_port(port: int, limit_s: float = 30.0) -> None:
    with anyio.fail_after(limit_s):
        while not await anyio.to_thread.run_sync(port_open, "127.0.0.1", port):  # noqa: ASYNC110
            await anyio.sleep(0.05)


# ---- load generators (identical for bare and edge) -------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def warm(call: Callable[[], Awaitable[Any]], count: int = 200) -> None:
    for _ in range(count):
        await call()


async def sequential(call: Callable[[], Awaitable[Any]], count: int) -> tuple[float, list[float]]:
    """Calls per second and each call's latency (seconds), one call at a time."""
    latencies = []
    start = time.perf_counter()
    for _ in range(count):
        t = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - t)
    return count / (time.perf_counter() - start), latencies


async def concurrent(
    calls: list[Callable[[], Awaitable[Any]]], count: int, latencies: list[float] | None = None
) -> float:
    """Calls per second with one loop per callable, ``count`` calls in all (each call's
    latency in seconds appended to ``latencies`` when given)."""
    per = count // len(calls)

    async def loop(call: Callable[[], Awaitable[Any]]) -> None:
        for _ in range(per):
            t = time.perf_counter()
            await call()
            if latencies is not None:
                latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for call in calls:
            tg.start_soon(loop, call)
    return per * len(calls) / (time.perf_counter() - start)


def turns(block: int) -> tuple[str, str]:
    """Which side goes first in ``block``: they alternate, so neither always follows the other."""
    return ("bare", "edge") if block % 2 == 0 else ("edge", "bare")


def tool_call(session: ClientSession, name: str) -> Callable[[], Awaitable[Any]]:
    async def call() -> None:
        result = await session.call_tool(name, ARGS)
        if result.is_error:
            raise RuntimeError(f"{name} failed: {result.content}")

    return call


@asynccontextmanager
async def stdio_session(params: StdioServerParameters, tool: str) -> AsyncIterator[ClientSession]:
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        with anyio.fail_after(30):  # the edge discovers the agent within a poll or two
            while tool not in {t.name for t in (await session.list_tools()).tools}:  # noqa: ASYNC110
                await anyio.sleep(0.1)
        yield session


@asynccontextmanager
async def http_sessions(url: str, token: str, count: int) -> AsyncIterator[list[ClientSession]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as client:
        sessions: list[ClientSession] = []
        async with anyio.create_task_group() as tg:
            ready = anyio.Event()
            done = anyio.Event()

            async def one() -> None:
                async with (
                    streamable_http_client(url, http_client=client) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    await session.initialize()
                    sessions.append(session)
                    if len(sessions) == count:
                        ready.set()
                    await done.wait()

            for _ in range(count):
                tg.start_soon(one)
            with anyio.fail_after(30):
                await ready.wait()
            try:
                yield sessions
            finally:
                done.set()


# ---- one round -------------------------------------------------------------------------------


Add = Callable[[str, float], None]


async def measure_stdio(
    args: argparse.Namespace,
    bus: Bus,
    bare: StdioServerParameters,
    edge: StdioServerParameters,
    add: Add,
) -> None:
    """Bus, bare and edge in turns; the edge's latencies give p50/p95, the bus's its p50."""
    subject = bus.subjects.endpoint("bench", "echo")

    async def on_bus() -> None:
        await bus.request_raw(subject, PAYLOAD)

    async with (
        stdio_session(bare, "echo") as bare_session,
        stdio_session(edge, "bench_echo") as edge_session,
    ):
        calls = {
            "bare": tool_call(bare_session, "echo"),
            "edge": tool_call(edge_session, "bench_echo"),
        }
        for call in (on_bus, *calls.values()):
            await warm(call)
        edge_latencies: list[float] = []
        bus_latencies: list[float] = []
        for block in range(max(1, args.calls // args.block)):
            _, latencies = await sequential(on_bus, args.block)
            bus_latencies += latencies
            rates = {}
            for side in turns(block):
                rates[side], latencies = await sequential(calls[side], args.block)
                if side == "edge":
                    edge_latencies += latencies
            add("sdk_stdio_calls_per_s", rates["bare"])
            add("mcp_stdio_calls_per_s", rates["edge"])
            add("mcp_vs_sdk_stdio", rates["edge"] / rates["bare"])
    add("bus_p50_ms", percentile(bus_latencies, 0.5))
    add("mcp_p50_ms", percentile(edge_latencies, 0.5))
    add("mcp_p95_ms", percentile(edge_latencies, 0.95))


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_now(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each named process, and of this one (the load generator) as ``client``."""
    return {**{name: cpu_seconds(pid) for name, pid in pids.items()}, "client": time.process_time()}


async def measure_http(
    args: argparse.Namespace,
    bare_url: str,
    edge_url: str,
    token: str,
    pids: dict[str, dict[str, int]],
    add: Add,
) -> None:
    """Bare and edge in turns, each with ``CONCURRENCY`` sessions calling at once; the CPU
    each process spent per call in its side's turns (``*_http_cpu_ms_*``)."""
    async with (
        http_sessions(bare_url, token, CONCURRENCY) as bare_sessions,
        http_sessions(edge_url, token, CONCURRENCY) as edge_sessions,
    ):
        calls = {
            "bare": [tool_call(s, "echo") for s in bare_sessions],
            "edge": [tool_call(s, "bench_echo") for s in edge_sessions],
        }
        for side_calls in calls.values():
            for call in side_calls:
                await warm(call, 20)
        block = args.block * 2
        spent = {side: dict.fromkeys(cpu_now(pids[side]), 0.0) for side in calls}
        served = dict.fromkeys(calls, 0)
        latencies: dict[str, list[float]] = {side: [] for side in calls}
        for number in range(max(1, args.calls // block)):
            rates = {side: 0.0 for side in calls}
            for side in turns(number):
                before = cpu_now(pids[side])
                rates[side] = await concurrent(calls[side], block, latencies[side])
                for name, seconds in cpu_now(pids[side]).items():
                    spent[side][name] += seconds - before[name]
                served[side] += block
            add("sdk_http_calls_per_s", rates["bare"])
            add("mcp_http_calls_per_s", rates["edge"])
            add("mcp_vs_sdk_http", rates["edge"] / rates["bare"])
    for side, prefix in (("bare", "sdk"), ("edge", "mcp")):
        for name, seconds in spent[side].items():
            add(f"{prefix}_http_cpu_ms_{name}", seconds / served[side] * 1000)
        add(f"{prefix}_http_p50_ms", percentile(latencies[side], 0.5))
        add(f"{prefix}_http_p95_ms", percentile(latencies[side], 0.95))


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"},
    },
}


async def raw_caller(
    client: httpx.AsyncClient, url: str, tool: str
) -> Callable[[], Awaitable[Any]]:
    """A ``tools/call`` of ``tool`` as plain JSON-RPC POSTs on one session of its own: a light
    client, so the latencies are the server side's rather than the SDK client's."""
    opened = await client.post(url, json=INITIALIZE)
    opened.raise_for_status()
    headers = {
        "Mcp-Session-Id": opened.headers["mcp-session-id"],
        "MCP-Protocol-Version": "2025-11-25",
    }
    done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    (await client.post(url, json=done, headers=headers)).raise_for_status()
    body = msgspec.json.encode(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": tool, "arguments": ARGS},
        }
    )

    async def call() -> None:
        reply = await client.post(url, content=body, headers=headers)
        if reply.status_code != 200 or b'"isError":false' not in reply.content:
            raise RuntimeError(f"{tool} failed: {reply.status_code} {reply.text[:200]}")

    return call


async def measure_http_raw(
    args: argparse.Namespace, bare_url: str, edge_url: str, token: str, add: Add
) -> None:
    """Bare and edge in turns, ``CONCURRENCY`` light clients at once: p50 and p95 per call."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    limits = httpx.Limits(max_connections=CONCURRENCY * 2)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:
        calls = {
            "bare": [await raw_caller(client, bare_url, "echo") for _ in range(CONCURRENCY)],
            "edge": [await raw_caller(client, edge_url, "bench_echo") for _ in range(CONCURRENCY)],
        }
        latencies: dict[str, list[float]] = {side: [] for side in calls}
        for side_calls in calls.values():
            for call in side_calls:
                await warm(call, 20)
        block = args.block * 2
        for number in range(max(1, args.calls // block)):
            for side in turns(number):
                await concurrent(calls[side], block, latencies[side])
    for side, prefix in (("bare", "sdk"), ("edge", "mcp")):
        add(f"{prefix}_http_raw_p50_ms", percentile(latencies[side], 0.5))
        add(f"{prefix}_http_raw_p95_ms", percentile(latencies[side], 0.95))


async def measure_api(url: str, token: str, count: int) -> tuple[float, float]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, headers=headers) as client:

        async def call() -> None:
            response = await client.post("/v1/bench/echo", content=PAYLOAD)
            response.raise_for_status()

        await warm(call, 100)
        rps = await concurrent([call] * CONCURRENCY, count)
        _, latencies = await sequential(call, count // 2)
    return rps, percentile(latencies, 0.5)


# ---- the whole run ---------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    home = tempfile.mkdtemp(prefix="sophia-bench-edge-")
    nats_server = NatsServer(store_dir=Path(home) / "nats")
    nats_server.start()
    settings = Settings(nats_url=nats_server.url, prefix=f"be{uuid.uuid4().hex[:8]}", home=home)
    edge_port, bare_port = free_port(), free_port()
    env = {
        **os.environ,
        "SOPHIA_NATS_URL": settings.nats_url,
        "SOPHIA_PREFIX": settings.prefix,
        "SOPHIA_HOME": home,
        "SOPHIA_LOG_LEVEL": "error",
        "SOPHIA_EDGE_BIND": f"127.0.0.1:{edge_port}",
        "SOPHIA_EDGE_RATE_PER_S": "1000000",
        "SOPHIA_EDGE_RATE_BURST": "1000000",
        "PYTHONPATH": str(ROOT),
    }
    agent, bare = spawn("agent", env), spawn("bare-http", env, bare_port)
    procs = [agent, bare]
    nc = await nats.connect(settings.nats_url, name="bench")  # the load generator's own client
    bus = Bus(nc, settings)
    try:
        await ensure_streams(bus.js, settings)
        token = await create_token(
            await bus.js.key_value(bus.subjects.config_bucket), "bench", ["*"]
        )
        edge = spawn_edge(env)
        procs.append(edge)
        await wait_port(edge_port)
        await wait_port(bare_port)
        pids = {
            "bare": {"server": bare.pid},
            "edge": {"edge": edge.pid, "agent": agent.pid},
        }
        if nats_server.process is not None:
            pids["edge"]["nats_server"] = nats_server.process.pid
        return await measure_all(args, env, bus, token, edge_port, bare_port, pids)
    finally:
        await nc.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        nats_server.stop()


async def measure_all(
    args: argparse.Namespace,
    env: dict[str, str],
    bus: Bus,
    token: str,
    edge_port: int,
    bare_port: int,
    pids: dict[str, dict[str, int]],
) -> dict[str, Any]:
    bare_stdio = StdioServerParameters(
        command=sys.executable, args=[__file__, "--role", "bare-stdio"], env=env
    )
    edge_stdio = StdioServerParameters(
        command=sys.executable, args=["-m", "ops.cli", "mcp"], env=env
    )
    edge_url = f"http://127.0.0.1:{edge_port}"
    figures: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        figures.setdefault(key, []).append(value)

    await measure_stdio(args, bus, bare_stdio, edge_stdio, add)
    bare_url = f"http://127.0.0.1:{bare_port}/mcp"
    await measure_http(args, bare_url, f"{edge_url}/mcp", token, pids, add)
    await measure_http_raw(args, bare_url, f"{edge_url}/mcp", token, add)
    rps, p50 = await measure_api(edge_url, token, args.calls // 2)
    add("http_rps", rps)
    add("http_p50_ms", p50)
    return summary(figures, args)


def summary(figures: dict[str, list[float]], args: argparse.Namespace) -> dict[str, Any]:
    """Medians over blocks; a ratio is the median of the block pairs' ratios."""
    result: dict[str, Any] = {k: round(statistics.median(v), 3) for k, v in figures.items()}
    result["mcp_vs_sdk"] = min(result["mcp_vs_sdk_stdio"], result["mcp_vs_sdk_http"])
    result["mcp_added_p50_ms"] = round(result["mcp_p50_ms"] - result["bus_p50_ms"], 3)
    result["calls"] = args.calls
    result["block"] = args.block
    result["blocks"] = len(figures["mcp_vs_sdk_stdio"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=6000, help="calls per side and transport")
    parser.add_argument("--block", type=int, default=100, help="calls per turn (HTTP: twice)")
    parser.add_argument(
        "--role", choices=["agent", "bare-stdio", "bare-http"], help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        role_main(args.role, args.port)
        return
    result = anyio.run(run, args, backend="asyncio", backend_options=backend_options())
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
