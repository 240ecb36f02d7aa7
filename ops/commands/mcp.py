"""``sophia mcp [--tools P …] [--namespace NAME]``: MCP over stdio, the command an editor
starts (mcp.json).

Runs as the local user (no token); stdout carries only the protocol, logs go to stderr.
``--namespace`` (else ``SOPHIA_NAMESPACE``) is the client's default memory namespace: memory
calls that name none use it (:mod:`edge.namespaces`).
"""

from __future__ import annotations

import argparse
from typing import Any

from bus import logs
from bus.config import Settings, load
from bus.errors import BadRequestError
from edge.access import check_pattern
from edge.config import ClientSettings, EdgeSettings, split_list
from edge.namespaces import check_namespace
from ops.cli import run_async


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "mcp",
        help="serve MCP over stdio (for Cursor and other MCP clients)",
        description="MCP over stdin/stdout: Sophia's public endpoints as tools.",
    )
    parser.add_argument(
        "--tools",
        action="append",
        default=[],
        help="only list tools matching these patterns, e.g. 'memory_*,tasks_submit' (repeatable)",
    )
    parser.add_argument(
        "--namespace",
        metavar="NAME",
        help="the memory namespace of calls that name none, e.g. the repository's directory "
        "name (default: $SOPHIA_NAMESPACE; unset: store in 'default', search every namespace)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    settings, edge_settings = load(Settings), load(EdgeSettings)
    namespace = load(ClientSettings, section="mcp").namespace
    if args.namespace is not None:
        namespace = check_namespace(args.namespace, "--namespace")
    try:
        tools = [check_pattern(p) for value in args.tools for p in split_list(value)]
    except ValueError as exc:
        raise BadRequestError(str(exc)) from None
    logs.configure(settings.log_level)
    from edge.serve import serve_stdio  # the MCP stack loads only for this command

    run_async(serve_stdio, settings, edge_settings, tools, namespace)
    return 0
