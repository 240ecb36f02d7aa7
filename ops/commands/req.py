"""``sophia req SUBJECT [JSON]``: one request with trace context; prints the reply.

A service error becomes ``sophia: <code>: <text>`` on stderr and the CLI's exit
status for that code (2 for 4xx, 3 for 408/503, 1 otherwise).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from typing import Any

import msgspec
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from bus import codec, tracing
from bus.client import ERROR_CODE_HEADER, ERROR_HEADER
from bus.config import Settings, load
from bus.errors import BadRequestError, error_from_code
from ops.cli import run_async
from ops.session import open_bus


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "req",
        help="send one request and print the reply",
        description="Send one request (JSON body, trace context in the headers) and print "
        "the reply as pretty JSON. A service error exits non-zero.",
    )
    parser.add_argument("subject", help="e.g. sophia.memory.health")
    parser.add_argument("body", nargs="?", default="", help="JSON body ('-' reads stdin)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="extra header (repeatable)",
    )
    parser.set_defaults(func=req)


def req(args: argparse.Namespace) -> int:
    """Send the request and print the reply. Raises the service's SophiaError."""
    settings = load(Settings)
    body = sys.stdin.read() if args.body == "-" else args.body
    payload = _payload(body)
    headers = _headers(args.header)
    reply = run_async(_send, settings, args.subject, payload, headers, args.timeout)
    raise_for_error(reply)
    print(_show(reply))
    return 0


def _payload(body: str) -> bytes:
    """The body as sent: checked to be JSON first. Raises BadRequestError."""
    if not body.strip():
        return b""
    try:
        msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from None
    return body.encode()


def _headers(pairs: list[str]) -> dict[str, str]:
    headers = {}
    for pair in pairs:
        name, sep, value = pair.partition(":")
        if not sep or not name.strip():
            raise BadRequestError(f"header {pair!r}: must be NAME:VALUE")
        headers[name.strip()] = value.strip()
    return headers


async def _send(
    settings: Settings, subject: str, payload: bytes, headers: dict[str, str], timeout: float | None
) -> Msg:
    exporting = tracing.configure("cli")
    try:
        async with open_bus(settings) as bus:
            with _root_span(subject):
                return await bus.request_raw(subject, payload, headers, timeout)
    finally:
        if exporting:  # flush only the exporter set up here
            tracing.shutdown()


def _root_span(subject: str) -> Any:
    """Start the trace this request carries: a real span when the SDK exports, else ids only.

    Without an SDK the OpenTelemetry API makes no ids, so a sampled context with fresh
    random ids is made current; ``traceparent`` then travels either way.
    """
    span = trace.get_tracer("sophia.cli").start_span(f"sophia req {subject}")
    if not span.get_span_context().is_valid:
        span = NonRecordingSpan(
            SpanContext(
                trace_id=random.getrandbits(128) or 1,
                span_id=random.getrandbits(64) or 1,
                is_remote=False,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
        )
    print(f"trace {span.get_span_context().trace_id:032x}", file=sys.stderr)
    return trace.use_span(span, end_on_exit=True)


def raise_for_error(reply: Msg) -> None:
    """Raise the service error a reply carries, described as ``<code>: <text>``."""
    headers = reply.headers or {}
    if ERROR_CODE_HEADER not in headers:
        return
    raw = headers[ERROR_CODE_HEADER]
    code = int(raw) if raw.isdigit() else 500
    raise error_from_code(code, f"{code}: {headers.get(ERROR_HEADER, 'error')}")


def _show(reply: Msg) -> str:
    """The reply body as pretty JSON (MessagePack decoded); other bytes as text."""
    if not reply.data:
        return ""
    try:
        if codec.is_msgpack(reply.headers):
            value = msgspec.msgpack.decode(reply.data)
        else:
            value = msgspec.json.decode(reply.data)
    except msgspec.DecodeError:
        return reply.data.decode(errors="replace")
    return json.dumps(msgspec.to_builtins(value), indent=2, ensure_ascii=False)
