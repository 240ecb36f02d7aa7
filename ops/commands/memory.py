"""``sophia memory index|search|stats``: talk to the running memory agent over the bus.

The CLI never opens the memory stores itself (it would fight the agent for the embedded
ones): every command is a request to ``sophia.memory.<endpoint>``. With no stack up it
says so and exits 3.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec

from bus.client import Bus
from bus.config import Settings, load
from bus.errors import UnavailableError
from bus.schemas import memory as s
from ops.cli import run_async
from ops.render import pretty_json, table
from ops.session import open_bus

INDEX_TIMEOUT_S = 3600.0
NO_AGENT = "the memory agent does not answer; is the stack up? (`sophia up`)"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "memory",
        help="index a repository, search memory, show memory stats",
        description="Work with the memory agent: index a repository, search, show stats.",
    )
    sub = parser.add_subparsers(dest="memory_command", required=True, metavar="ACTION")
    index = sub.add_parser("index", help="index a repository (only changed files are redone)")
    index.add_argument("path", help="repository directory, as the memory agent's machine sees it")
    index.add_argument("--namespace", default="", help="default: the directory's name")
    index.set_defaults(func=index_command)
    search = sub.add_parser("search", help="search memory by meaning and keywords")
    search.add_argument("query")
    search.add_argument(
        "--namespace", default="default", help="default: 'default' (code: its directory's name)"
    )
    search.add_argument("-k", type=int, default=5, help="how many hits (1-100)")
    search.add_argument("--kind", action="append", default=[], choices=s.KINDS)
    search.add_argument("--json", action="store_true", help="print the reply as JSON")
    search.set_defaults(func=search_command)
    stats = sub.add_parser("stats", help="items per kind and tier, model, hit counters")
    stats.add_argument("--namespace", default="")
    stats.add_argument("--json", action="store_true", help="print the reply as JSON")
    stats.set_defaults(func=stats_command)


async def _call(
    settings: Settings, endpoint: str, body: msgspec.Struct, reply: type, **kw: Any
) -> Any:
    async with open_bus(settings) as bus:
        return await _request(bus, endpoint, body, reply, **kw)


async def _request(bus: Bus, endpoint: str, body: msgspec.Struct, reply: type, **kw: Any) -> Any:
    try:
        return await bus.request("memory", endpoint, body, reply, **kw)
    except UnavailableError as exc:
        raise UnavailableError(NO_AGENT) from exc


def index_command(args: argparse.Namespace) -> int:
    """Index PATH through the agent, with a progress bar on stderr and a summary."""
    settings = load(Settings)
    path = str(Path(args.path).expanduser().resolve())
    result: s.IndexResult = run_async(_index, settings, path, args.namespace)
    print(
        f"indexed {result.namespace}: {result.files} files ({result.changed} changed, "
        f"{result.removed} removed), {result.chunks} chunks in {result.seconds:.1f} s"
    )
    return 0


async def _index(settings: Settings, path: str, namespace: str) -> s.IndexResult:
    async with open_bus(settings) as bus:
        inbox = bus.nc.new_inbox()
        sub = await bus.nc.subscribe(inbox)
        req = s.IndexRequest(path=path, namespace=namespace, progress_subject=inbox)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_show_progress, sub)
            try:
                return await _request(bus, "index", req, s.IndexResult, timeout=INDEX_TIMEOUT_S)
            finally:
                tg.cancel_scope.cancel()
                print(file=sys.stderr)


async def _show_progress(sub: Any) -> None:
    async for msg in sub.messages:
        event = msgspec.json.decode(msg.data, type=s.IndexProgress)
        print(progress_line(event), end="", file=sys.stderr, flush=True)


def progress_line(event: s.IndexProgress, width: int = 30) -> str:
    """``\\r[#####-----]  12/40 files  path`` (path cut to fit a terminal line)."""
    done = width * event.done // max(event.total, 1)
    bar = "#" * done + "-" * (width - done)
    return f"\r[{bar}] {event.done:>5}/{event.total} files  {event.path[-40:]:<40}"


def search_command(args: argparse.Namespace) -> int:
    """Print the best hits: score, tier, where (path:lines or kind), first line."""
    settings = load(Settings)
    req = s.SearchRequest(query=args.query, namespace=args.namespace, k=args.k, kinds=args.kind)
    result: s.SearchResult
    result, others = run_async(_search, settings, req)
    if args.json:
        print(pretty_json(result))
        return 0
    rows = [(f"{h.score:.4f}", h.tier, _where(h), _first_line(h.text)) for h in result.hits]
    if rows:
        print(table(("SCORE", "TIER", "WHERE", "TEXT"), rows))
    elif others:
        print(f"no hits in namespace {req.namespace!r}; memory also holds: {', '.join(others)}")
        print("(--namespace NAME searches one of them)")
    else:
        print("no hits")
    return 0


async def _search(settings: Settings, req: s.SearchRequest) -> tuple[s.SearchResult, list[str]]:
    """The hits, and when there are none the other namespaces that hold items."""
    async with open_bus(settings) as bus:
        result = await _request(bus, "search", req, s.SearchResult)
        if result.hits:
            return result, []
        stats = await _request(bus, "stats", s.StatsRequest(), s.Stats)
    return result, [n for n in stats.namespaces if n != req.namespace]


def _where(hit: s.Hit) -> str:
    meta = hit.metadata
    if "path" in meta and "start_line" in meta:
        return f"{meta['path']}:{meta['start_line']}-{meta.get('end_line', '')}"
    return str(meta.get("path", hit.kind))


def _first_line(text: str, limit: int = 70) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def stats_command(args: argparse.Namespace) -> int:
    """Print items per kind and per tier, the model and device, hit counters."""
    settings = load(Settings)
    stats: s.Stats = run_async(
        _call, settings, "stats", s.StatsRequest(namespace=args.namespace), s.Stats
    )
    if args.json:
        print(pretty_json(stats))
        return 0
    print(f"model {stats.model} on {stats.device} ({stats.dim} dims), {stats.items} items")
    print(table(("TIER", "BACKEND", "ITEMS"), [(t.name, t.backend, t.items) for t in stats.tiers]))
    print(table(("KIND", "ITEMS"), sorted(stats.by_kind.items())))
    print(
        f"L1 hits {stats.l1_hits}, misses {stats.l1_misses}; "
        f"model-call cache hits {stats.cache_hits}, misses {stats.cache_misses}"
    )
    return 0
