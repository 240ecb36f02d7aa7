"""``sophia memory index|search|stats``: talk to the running memory agent over the bus.

The CLI never opens the memory stores itself (it would fight the agent for the embedded
ones): every command is a request to ``sophia.memory.<endpoint>``. With no stack up it
says so and exits 3.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import anyio
import msgspec
import nats.errors

from bus.client import Bus
from bus.config import Settings, load
from bus.errors import UnavailableError
from bus.schemas import memory as s
from ops.cli import run_async
from ops.render import pretty_json, table
from ops.session import open_bus

INDEX_TIMEOUT_S = 3600.0
NO_AGENT = "the memory agent does not answer; is the stack up? (`sophia up`)"
LINE_EVERY_S = 3.0  # progress to a log or a pipe: one line this often
REDRAW_EVERY_S = 0.1  # progress bar on a terminal: redrawn at most this often
MATCHED = {"l2": "vector", "l3": "keyword", "hybrid": "both"}  # Hit.tier: who found it


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "memory",
        help="index a repository, search memory, show memory stats",
        description="Work with the memory agent: index a repository, search, show stats.",
    )
    sub = parser.add_subparsers(dest="memory_command", required=True, metavar="ACTION")
    index = sub.add_parser("index", help="index a repository (only changed files are redone)")
    index.add_argument(
        "path", type=_path, help="repository directory, as the memory agent's machine sees it"
    )
    index.add_argument("--namespace", default="", help="default: the directory's name")
    index.set_defaults(func=index_command)
    search = sub.add_parser("search", help="search memory by meaning and keywords")
    search.add_argument("query")
    search.add_argument(
        "--namespace",
        default=None,
        help="search one namespace (code: its directory's name); default: every namespace",
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


def _path(text: str) -> str:
    """argparse type: a path that is not blank (an empty one would mean the cwd)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def index_command(args: argparse.Namespace) -> int:
    """Index PATH through the agent, with progress on stderr and a summary."""
    settings = load(Settings)
    path = str(Path(args.path).expanduser().resolve())
    result: s.IndexResult = run_async(_index, settings, path, args.namespace)
    print(
        f"indexed {result.namespace}: {result.files} files ({result.changed} changed, "
        f"{result.removed} removed), {result.chunks} chunks in {result.seconds:.1f} s"
    )
    return 0


async def _index(settings: Settings, path: str, namespace: str) -> s.IndexResult:
    view = ProgressView(sys.stderr)
    async with open_bus(settings) as bus:
        inbox = bus.nc.new_inbox()
        sub = await bus.nc.subscribe(inbox)
        req = s.IndexRequest(path=path, namespace=namespace, progress_subject=inbox)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_show_progress, sub, view)
                try:
                    result = await _request(
                        bus, "index", req, s.IndexResult, timeout=INDEX_TIMEOUT_S
                    )
                finally:
                    tg.cancel_scope.cancel()
            # the reply can overtake the last events: the result says where the run ended
            view.show(_ended(result))
            return result
        finally:
            view.finish()
            # events nobody reads any more would hold up the drain at exit for its timeout
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()


def _ended(result: s.IndexResult) -> s.IndexProgress:
    return s.IndexProgress(
        namespace=result.namespace,
        done=result.files,
        total=result.files,
        chunks=result.chunks,
        seconds=result.seconds,
    )


async def _show_progress(sub: Any, view: ProgressView) -> None:
    async for msg in sub.messages:
        view.show(msgspec.json.decode(msg.data, type=s.IndexProgress))


class ProgressView:
    """Index progress for a person: on a terminal a bar redrawn in place, elsewhere (a log,
    a pipe) one plain line every ``every_s`` seconds, plus the first and the last."""

    def __init__(
        self,
        out: TextIO,
        *,
        tty: bool | None = None,
        every_s: float = LINE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.every_s = REDRAW_EVERY_S if self.tty else every_s
        self.clock = clock
        self.columns = shutil.get_terminal_size().columns
        self._last: float | None = None
        self._seen: tuple[int, int, int] | None = None  # (done, total, chunks) last shown
        self._drawn = False  # a bar is on the line: finish() ends it

    def show(self, event: s.IndexProgress) -> None:
        now, seen = self.clock(), (event.done, event.total, event.chunks)
        last = event.done >= event.total
        if seen == self._seen or (
            not last and self._last is not None and now - self._last < self.every_s
        ):
            return
        self._last, self._seen = now, seen
        if self.tty:
            self.out.write(progress_line(event, self.columns))
            self._drawn = True
        else:
            self.out.write(progress_text(event) + "\n")
        self.out.flush()

    def finish(self) -> None:
        if self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False


def _rate(event: s.IndexProgress) -> str:
    return f"{event.chunks / event.seconds:.1f}" if event.seconds > 0 else "-"


def progress_line(event: s.IndexProgress, columns: int = 80, width: int = 20) -> str:
    """``\\r[#####-----]  12/40 files  506 chunks  9.8/s  path``, as wide as ``columns``
    less one (the path cut from the left to fit), so each redraw covers the one before."""
    done = width * event.done // max(event.total, 1)
    bar = "#" * done + "-" * (width - done)
    head = (
        f"[{bar}] {event.done:>5}/{event.total} files {event.chunks:>6} chunks "
        f"{_rate(event):>6}/s  "
    )
    room = max(columns - 1 - len(head), 0)
    path = event.path if len(event.path) <= room else "…" + event.path[len(event.path) - room + 1 :]
    return "\r" + (head + path)[: columns - 1].ljust(columns - 1)


def progress_text(event: s.IndexProgress) -> str:
    """``indexing httpx: 12/40 files, 506 chunks, 9.8 chunks/s, 51 s`` (one log line)."""
    return (
        f"indexing {event.namespace}: {event.done}/{event.total} files, {event.chunks} chunks, "
        f"{_rate(event)} chunks/s, {event.seconds:.0f} s"
    )


def search_command(args: argparse.Namespace) -> int:
    """Print the best hits: rank, which search found each, where, symbol, first line."""
    settings = load(Settings)
    req = s.SearchRequest(query=args.query, namespace=args.namespace, k=args.k, kinds=args.kind)
    result: s.SearchResult
    result, others = run_async(_search, settings, req)
    if args.json:
        print(pretty_json(result))
        return 0
    if result.hits:
        print(hits_table(result.hits))
    elif others:
        print(f"no hits in namespace {req.namespace!r}; memory also holds: {', '.join(others)}")
        print("(--namespace NAME searches one of them; without it, every namespace)")
    else:
        print("no hits")
    return 0


def hits_table(hits: list[s.Hit]) -> str:
    """RANK, MATCH (vector, keyword or both), NAMESPACE when the hits come from more than
    one, WHERE (path:lines, or the kind), SYMBOL (``Class.method``), the first line."""
    several = len({h.namespace for h in hits}) > 1
    headers = ["RANK", "MATCH"] + (["NAMESPACE"] if several else []) + ["WHERE", "SYMBOL", "TEXT"]
    rows = []
    for rank, h in enumerate(hits, start=1):
        symbol = h.metadata.get("symbol")
        row = [rank, MATCHED.get(h.tier, h.tier)] + ([h.namespace] if several else [])
        rows.append(
            [*row, _where(h), symbol if isinstance(symbol, str) else None, _first_line(h.text)]
        )
    return table(headers, rows)


async def _search(settings: Settings, req: s.SearchRequest) -> tuple[s.SearchResult, list[str]]:
    """The hits, and when there are none in the namespace asked for, the namespaces that
    hold items."""
    async with open_bus(settings) as bus:
        result = await _request(bus, "search", req, s.SearchResult)
        if result.hits or req.namespace is None:
            return result, []
        stats = await _request(bus, "stats", s.StatsRequest(), s.Stats)
    return result, [n for n in stats.namespaces if n != req.namespace]


def _where(hit: s.Hit) -> str:
    meta = hit.metadata
    if "path" in meta and "start_line" in meta:
        return f"{meta['path']}:{meta['start_line']}-{meta.get('end_line', '')}"
    return str(meta.get("path", hit.kind))


def _first_line(text: str, limit: int = 60) -> str:
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
