"""``sophia token create NAME [--scope S …] [--tools P …] | revoke NAME | ls``: edge bearer tokens.

``create`` prints the token alone on stdout (capture it: it is stored hashed and never shown
again). Scopes: ``*``, ``SERVICE``, ``SERVICE:*``, ``SERVICE:ENDPOINT``, ``SERVICE:read``; a
scope naming an endpoint a running service does not have is refused, and one naming a service
not running now is created with a note saying it could not be checked. ``revoke`` returns
once every running edge replica has confirmed the token is gone (exit 3 if one does not
answer within :data:`SYNC_WAIT_S`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio
import msgspec

from bus import codec, topology, wire
from bus.client import Bus
from bus.config import Settings, load
from bus.errors import BadRequestError, UnavailableError
from bus.micro import InfoResponse, PingResponse
from bus.schemas.edge import EDGE_SERVICE, TokenSync, TokenSynced
from bus.subjects import srv
from edge.tokens import create_token, list_tokens, revoke_token, scope_problems, unseen_services
from ops.cli import run_async
from ops.render import table
from ops.session import discover, open_bus, ours

SYNC_WAIT_S = 3.0
_synced = msgspec.json.Decoder(TokenSynced)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "token",
        help="create, revoke or list bearer tokens for the edge",
        description="Bearer tokens for the edge's HTTP API and MCP over HTTP.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    create = verbs.add_parser("create", help="create a token and print it (once)")
    create.add_argument("name", help="letters, digits, '_' or '-'")
    create.add_argument(
        "--scope",
        action="append",
        default=[],
        help="what the token reaches: *, SERVICE, SERVICE:ENDPOINT, SERVICE:read (repeatable; "
        "default *)",
    )
    create.add_argument(
        "--tools",
        action="append",
        default=[],
        help="MCP tool-name pattern the token lists, e.g. 'memory_*' (repeatable; default all)",
    )
    create.set_defaults(func=lambda a: run_async(_create, load(Settings), a))
    revoke = verbs.add_parser("revoke", help="revoke a token now, on every edge")
    revoke.add_argument("name")
    revoke.set_defaults(func=lambda a: run_async(_revoke, load(Settings), a))
    ls = verbs.add_parser("ls", help="list token names and scopes (never the tokens)")
    ls.set_defaults(func=lambda a: run_async(_ls, load(Settings)))


async def _create(settings: Settings, args: argparse.Namespace) -> int:
    async with open_bus(settings) as bus:
        await topology.ensure_streams(bus.js, settings)
        services = await running_services(bus, settings)
        problems = scope_problems(args.scope, services)
        if problems:
            raise BadRequestError("; ".join(problems))
        kv = await bus.js.key_value(bus.subjects.config_bucket)
        token = await create_token(kv, args.name, args.scope, args.tools)
    for service in unseen_services(args.scope, services):
        print(
            f"sophia: note: scope names service {service!r}, which is not running now; "
            "its endpoints could not be checked",
            file=sys.stderr,
        )
    print(token)
    return 0


async def running_services(bus: Bus, settings: Settings) -> dict[str, dict[str, str]]:
    """{service: {endpoint: access}} of this install's services answering ``$SRV.INFO``."""
    infos = await discover(bus.nc, srv("INFO"), InfoResponse)
    services: dict[str, dict[str, str]] = {}
    for info in infos:
        if ours(info.metadata, settings) and info.name != EDGE_SERVICE:
            endpoints = services.setdefault(info.name, {})
            endpoints.update({e.name: e.metadata.get("access", "") for e in info.endpoints})
    return services


async def _revoke(settings: Settings, args: argparse.Namespace) -> int:
    async with open_bus(settings) as bus:
        await topology.ensure_streams(bus.js, settings)
        await revoke_token(await bus.js.key_value(bus.subjects.config_bucket), args.name)
        missing = await sync_edges(bus, settings, args.name)
    if missing:
        raise UnavailableError(
            f"token {args.name!r} is revoked, but {missing} edge replica(s) did not confirm "
            f"within {SYNC_WAIT_S:g}s; they refuse it once their watch catches up"
        )
    return 0


async def sync_edges(bus: Bus, settings: Settings, name: str) -> int:
    """Ask every running edge replica to re-read token ``name``; how many did not answer."""
    pings = await discover(bus.nc, srv("PING", EDGE_SERVICE), PingResponse, window=0.3)
    waiting = {p.id for p in pings if ours(p.metadata, settings)}
    if not waiting:
        return 0
    inbox = bus.nc.new_inbox()
    sub = await bus.nc.subscribe(inbox)
    try:
        subject = bus.subjects.endpoint(EDGE_SERVICE, "tokens.sync")
        await wire.publish(bus.nc, subject, codec.encode(TokenSync(name=name)), reply=inbox)
        with anyio.move_on_after(SYNC_WAIT_S):
            async for msg in sub.messages:
                try:
                    waiting.discard(_synced.decode(msg.data).id)
                except msgspec.DecodeError:
                    continue
                if not waiting:
                    break
    finally:
        await sub.unsubscribe()
    return len(waiting)


async def _ls(settings: Settings) -> int:
    async with open_bus(settings) as bus:
        await topology.ensure_streams(bus.js, settings)
        records = await list_tokens(await bus.js.key_value(bus.subjects.config_bucket))
    if not records:
        print("no tokens")
        return 0
    rows = ((r.name, " ".join(r.scopes), " ".join(r.tools) or "*") for r in records)
    print(table(("NAME", "SCOPES", "TOOLS"), rows))
    return 0
