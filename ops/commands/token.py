"""``sophia token create NAME [--scope S …] [--tools P …] | revoke NAME | ls``: edge bearer tokens.

``create`` prints the token alone on stdout (capture it: it is stored hashed and never shown
again). Scopes: ``*``, ``SERVICE``, ``SERVICE:*``, ``SERVICE:ENDPOINT``, ``SERVICE:read``.
"""

from __future__ import annotations

import argparse
from typing import Any

from bus import topology
from bus.config import Settings, load
from edge.tokens import create_token, list_tokens, revoke_token
from ops.cli import run_async
from ops.render import table
from ops.session import open_bus


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
        kv = await bus.js.key_value(bus.subjects.config_bucket)
        token = await create_token(kv, args.name, args.scope, args.tools)
    print(token)
    return 0


async def _revoke(settings: Settings, args: argparse.Namespace) -> int:
    async with open_bus(settings) as bus:
        await topology.ensure_streams(bus.js, settings)
        await revoke_token(await bus.js.key_value(bus.subjects.config_bucket), args.name)
    return 0


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
