"""Gateway benchmark: what ``sophia.llm.complete`` adds over calling the upstream directly.

Prints one JSON object; everything is measured in the same run against the same local
OpenAI-compatible upstream (tests/fixtures/openai_upstream.py, in a process of its own):

- ``direct_*``: httpx straight to the upstream's ``/v1/chat/completions``;
- ``gateway_*``: a bus request to ``sophia.llm.complete`` (the llm agent in its own process,
  through the portkey-ai SDK), at temperature 0.7 so no cache is involved;
  ``gateway_added_*`` is its percentile minus the direct one;
- ``gateway_cold_added_p50_ms``: the same at temperature 0 on fresh ``chat`` prompts, so every
  call first asks the memory agent's cache (exact, then by meaning) and misses;
- ``litellm_*``: the LiteLLM proxy (a dev dependency) in front of the same upstream, driven
  the same way as ``direct``;
- where the gateway's time goes: ``sdk_*`` is the portkey-ai SDK called from this process
  straight to the upstream (what the SDK itself adds over httpx), ``bus_hop_*`` a request to
  the llm agent's cheapest endpoint (``sophia.llm.models``: the bus round trip and the
  agent's dispatch, no model call);
- ``exact_hit_p50_ms``, ``semantic_hit_p50_ms``: answers from the caches;
- ``semantic_hit_rate`` / ``semantic_false_hit_rate``: on tests/data/cache_pairs.json, each
  pair in a project of its own: the first prompt is asked, and once its answer has reached
  the memory agent's cache (the gateway puts it there after replying, some milliseconds
  later) the second is asked; a paraphrase should be answered from the cache, a near-miss
  never;
- ``token_estimate_*``: cl100k (LiteLLM's bundled copy) tokens over the gateway's estimate.

The three transports take turns in blocks of ``--block`` calls, so they see the same load.

    python bench/gateway.py [--calls 1500] [--block 50]
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import nats
from portkey_ai import AsyncPortkey

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.llm.cache import key_for  # noqa: E402
from bench.cache_quality import load_pairs  # noqa: E402
from bench.litellm_proxy import litellm_proxy  # noqa: E402
from bus.client import Bus  # noqa: E402
from bus.config import Settings  # noqa: E402
from bus.schemas.common import Empty  # noqa: E402
from bus.schemas.llm import (  # noqa: E402
    CompleteRequest,
    CompleteResult,
    Message,
    ModelsResult,
    Scope,
)
from bus.schemas.memory import CacheLookupRequest, CacheLookupResult  # noqa: E402
from bus.topology import ensure_streams  # noqa: E402
from ops.natsserver import NatsServer, free_port  # noqa: E402

MODEL = "bench-model"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def upstream_main(port: int) -> None:
    """Role: the scripted upstream, serving until killed."""
    from tests.fixtures.openai_upstream import serving

    with serving(port=port, record=False):
        while True:
            time.sleep(3600)


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except Exception:  # not up yet
            pass
        await anyio.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {limit_s:g} s")


def chat_body(text: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 64,
        "temperature": 0.7,
    }


def ask(text: str, **fields: Any) -> CompleteRequest:
    return CompleteRequest(messages=[Message(role="user", content=text)], max_tokens=64, **fields)


async def timed(call: Callable[[], Awaitable[Any]], samples: list[float]) -> Any:
    started = time.perf_counter()
    result = await call()
    samples.append((time.perf_counter() - started) * 1000)
    return result


async def measure_paths(
    bus: Bus, upstream_url: str, litellm_url: str, calls: int, block: int
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {
        "direct": [],
        "gateway": [],
        "litellm": [],
        "sdk": [],
        "bus_hop": [],
    }
    async with httpx.AsyncClient(timeout=30) as http:
        sdk_client = AsyncPortkey(base_url=upstream_url, api_key="direct", http_client=http)

        async def sdk() -> None:
            await sdk_client.chat.completions.create(**chat_body("hi"))

        async def bus_hop() -> None:
            await bus.request("llm", "models", Empty(), ModelsResult, timeout=30)

        async def direct() -> None:
            (
                await http.post(f"{upstream_url}/chat/completions", json=chat_body("hi"))
            ).raise_for_status()

        async def litellm() -> None:
            reply = await http.post(
                f"{litellm_url}/chat/completions",
                json=chat_body("hi"),
                headers={"Authorization": "Bearer sk-bench"},
            )
            reply.raise_for_status()

        async def gateway() -> None:
            await bus.request(
                "llm", "complete", ask("hi", temperature=0.7), CompleteResult, timeout=30
            )

        paths = {
            "direct": direct,
            "gateway": gateway,
            "litellm": litellm,
            "sdk": sdk,
            "bus_hop": bus_hop,
        }
        for call in paths.values():  # warm every path: connections, imports, JIT-ish caches
            for _ in range(50):
                await call()
        order = list(paths)
        for start in range(0, calls, block):
            for name in order:
                for _ in range(min(block, calls - start)):
                    await timed(paths[name], samples[name])
            order = order[1:] + order[:1]
    return samples


async def measure_caches(bus: Bus, count: int) -> dict[str, Any]:
    """Cold calls on fresh prompts (each asks the memory agent's cache and misses), then,
    once the writes that follow them are done, exact hits on the same prompts."""
    cold: list[float] = []
    exact: list[float] = []
    prompts = [ask(f"explain cache entry {i} {uuid.uuid4().hex[:6]}") for i in range(count)]

    async def call(request: CompleteRequest) -> CompleteResult:
        return await bus.request("llm", "complete", request, CompleteResult, timeout=30)

    for request in prompts:
        await timed(lambda r=request: call(r), cold)
    await anyio.sleep(2)  # the cache puts and ledger rows of the cold calls land
    for _ in range(3):
        for request in prompts:
            result = await timed(lambda r=request: call(r), exact)
            if result.cached != "exact":
                raise RuntimeError(f"expected an exact hit, got {result.cached!r}")
    return {"cold": cold, "exact": exact, **await measure_pairs(bus, load_pairs())}


async def cached_in_memory(bus: Bus, request: CompleteRequest, limit_s: float = 10.0) -> None:
    """Wait until the memory agent holds the answer the gateway cached for ``request`` (the
    gateway puts it there after replying): a paraphrase asked sooner would miss."""
    key = key_for(request, MODEL)
    if key is None:
        raise RuntimeError("the bench's requests must be cacheable (temperature 0)")
    lookup = CacheLookupRequest(model=MODEL, prompt=key.prompt, scope=key.partition, semantic=False)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        found = await bus.request("memory", "cache.lookup", lookup, CacheLookupResult, timeout=5)
        if found.hit:
            return
        await anyio.sleep(0.01)
    raise RuntimeError("the gateway's cache entry never reached the memory agent")


def _pairs(data: dict[str, Any], half: str, split: str) -> list[tuple[str, str]]:
    return [(p["a"], p["b"]) for p in data[half][split]]


async def measure_pairs(bus: Bus, data: dict[str, Any]) -> dict[str, Any]:
    """Each pair in a project of its own: ask ``a`` (cached), then ``b``; was ``b`` a hit?"""
    hits: list[float] = []
    outcome: dict[str, list[bool]] = {}
    for half in ("paraphrases", "near_misses"):
        for split in ("tune", "holdout"):
            seen = outcome.setdefault(f"{half}_{split}", [])
            for a, b in _pairs(data, half, split):
                scope = Scope(project=f"pair-{uuid.uuid4().hex[:8]}")
                first = ask(a, scope=scope)
                await bus.request("llm", "complete", first, CompleteResult, timeout=30)
                await cached_in_memory(bus, first)
                started = time.perf_counter()
                second = await bus.request(
                    "llm", "complete", ask(b, scope=scope), CompleteResult, timeout=30
                )
                if second.cached == "semantic":
                    hits.append((time.perf_counter() - started) * 1000)
                seen.append(second.cached != "")
    return {"semantic_hits": hits, **outcome}


def token_ratios() -> dict[str, float]:
    """cl100k's count over the gateway's estimate, on Sophia's own sources."""
    import litellm

    os.environ.setdefault(
        "TIKTOKEN_CACHE_DIR",
        str(Path(litellm.__file__).parent / "litellm_core_utils" / "tokenizers"),
    )
    import tiktoken

    from adapters.llm import tokens

    encoding = tiktoken.get_encoding("cl100k_base")
    ratios = []
    for path in sorted(
        [*ROOT.glob("bus/*.py"), *ROOT.glob("adapters/llm/*.py"), ROOT / "README.md"]
    ):
        text = path.read_text()
        estimate = tokens.estimate([Message(role="user", content=text)])
        ratios.append(len(encoding.encode(text)) / estimate)
    return {
        "token_estimate_max_ratio": round(max(ratios), 3),
        "token_estimate_median_ratio": round(statistics.median(ratios), 3),
    }


def write_config(path: Path, upstream_url: str) -> None:
    path.write_text(
        "[llm]\nattempt_timeout_s = 30\n"
        f'[[llm.models]]\nname = "{MODEL}"\nbase_url = "{upstream_url}"\n'
        "context_window = 32768\ninput_usd_per_mtok = 0.5\noutput_usd_per_mtok = 1.5\n"
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="sophia-bench-gw-"))
    server = NatsServer(store_dir=home / "nats")
    server.start()
    port = free_port()
    upstream_url = f"http://127.0.0.1:{port}/v1"
    config = home / "sophia.toml"
    write_config(config, upstream_url)
    env = {
        **os.environ,
        "SOPHIA_HOME": str(home),
        "SOPHIA_NATS_URL": server.url,
        "SOPHIA_CONFIG": str(config),
        "PYTHONPATH": str(ROOT),
    }
    procs = [spawn([sys.executable, __file__, "--role", "upstream", "--port", str(port)], env)]
    procs += [
        spawn([sys.executable, "-m", "bus.runner", f"agents.{a}"], env) for a in ("llm", "memory")
    ]
    nc = await nats.connect(server.url)
    settings = Settings(home=str(home), nats_url=server.url)
    bus = Bus(nc, settings)
    await ensure_streams(bus.js, settings)
    try:
        async with httpx.AsyncClient() as http:
            await wait_for(lambda: _ok(http.get(f"{upstream_url}/models")), "the upstream")
        await wait_for(lambda: _answers(bus, "llm"), "the llm agent")
        await wait_for(lambda: _answers(bus, "memory"), "the memory agent")
        with litellm_proxy(upstream_url, MODEL) as litellm_url:
            samples = await measure_paths(bus, upstream_url, litellm_url, args.calls, args.block)
        caches = await measure_caches(bus, args.cache_calls)
    finally:
        await nc.drain()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()
    return summary(samples, caches)


async def _ok(reply: Awaitable[httpx.Response]) -> bool:
    return (await reply).status_code == 200


async def _answers(bus: Bus, service: str) -> bool:
    from bus.schemas.common import Empty, Health

    await bus.request(service, "health", Empty(), Health, timeout=1)
    return True


def _rate(outcomes: list[bool]) -> float | None:
    return round(sum(outcomes) / len(outcomes), 3) if outcomes else None


def summary(samples: dict[str, list[float]], caches: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, values in samples.items():
        out[f"{name}_p50_ms"] = round(percentile(values, 0.5), 3)
        out[f"{name}_p95_ms"] = round(percentile(values, 0.95), 3)
    for name in ("gateway", "litellm", "sdk"):
        for q in ("p50", "p95"):
            out[f"{name}_added_{q}_ms"] = round(out[f"{name}_{q}_ms"] - out[f"direct_{q}_ms"], 3)
    out["gateway_cold_added_p50_ms"] = round(
        percentile(caches["cold"], 0.5) - out["direct_p50_ms"], 3
    )
    out["exact_hit_p50_ms"] = round(percentile(caches["exact"], 0.5), 3)
    hits = caches["semantic_hits"]
    out["semantic_hit_p50_ms"] = round(percentile(hits, 0.5), 3) if hits else None
    para = caches["paraphrases_tune"] + caches["paraphrases_holdout"]
    near = caches["near_misses_tune"] + caches["near_misses_holdout"]
    out["semantic_hit_rate"] = _rate(para)
    out["semantic_false_hit_rate"] = _rate(near)
    for split in ("tune", "holdout"):
        out[f"semantic_hit_rate_{split}"] = _rate(caches[f"paraphrases_{split}"])
        out[f"semantic_false_hit_rate_{split}"] = _rate(caches[f"near_misses_{split}"])
    out["paraphrase_pairs"], out["near_miss_pairs"] = len(para), len(near)
    out["calls_per_path"] = len(samples["direct"])
    out |= token_ratios()
    out["targets"] = {
        "gateway_added_p50_ms<=1": out["gateway_added_p50_ms"] <= 1.0,
        "gateway_added_below_litellm": out["gateway_added_p50_ms"] < out["litellm_added_p50_ms"],
        "semantic_false_hit_rate==0": out["semantic_false_hit_rate"] == 0,
        "semantic_hit_rate>=0.6": (out["semantic_hit_rate"] or 0) >= 0.6,
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1500, help="calls per path")
    parser.add_argument("--block", type=int, default=50)
    parser.add_argument("--cache-calls", type=int, default=100)
    parser.add_argument("--role", choices=("upstream",), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "upstream":
        upstream_main(args.port)
        return
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = anyio.run
    print(json.dumps(runner(run(args))))


if __name__ == "__main__":
    main()
