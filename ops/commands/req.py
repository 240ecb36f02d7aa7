"""``sophia req SUBJECT [JSON]``: one request with trace context; prints the reply.

A service error becomes ``sophia: <code>: <text>`` on stderr and the CLI's exit
status for that code (2 for 4xx, 3 for 408/503, 1 otherwise). The subject, the body,
``--timeout`` and every ``-H`` header are checked before anything connects: a bad one
exits 2 with one line that names it, never quotes it.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from typing import Any

import msgspec
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from bus import codec, tracing
from bus.client import ERROR_CODE_HEADER, ERROR_HEADER
from bus.config import Settings, load
from bus.errors import BadRequestError, decode_problem, error_from_code
from bus.subjects import is_publishable
from ops.cli import run_async, seconds
from ops.session import open_bus

#: a header name as HTTP and NATS allow it (RFC 9110 token)
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "req",
        help="send one request and print the reply",
        description="Send one request (JSON body, trace context in the headers) and print "
        "the reply as pretty JSON. A service error exits non-zero.",
    )
    parser.add_argument("subject", type=subject, help="e.g. sophia.memory.health")
    parser.add_argument("body", nargs="?", default="", help="JSON body ('-' reads stdin)")
    parser.add_argument("--timeout", type=seconds, default=None, metavar="SECONDS")
    parser.add_argument(
        "-H",
        "--header",
        type=header,
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="extra header (repeatable)",
    )
    parser.set_defaults(func=req)


def subject(text: str) -> str:
    """argparse type: a subject a message may be sent to (no spaces, no wildcards)."""
    if not is_publishable(text):
        raise argparse.ArgumentTypeError("must be dot-separated tokens without spaces or wildcards")
    return text


def header(text: str) -> tuple[str, str]:
    """argparse type: ``NAME:VALUE`` with a header-token name; the value may be empty."""
    name, sep, value = text.partition(":")
    if not sep or not _HEADER_NAME.fullmatch(name.strip()):
        raise argparse.ArgumentTypeError(
            "must be NAME:VALUE, NAME letters, digits or one of !#$%&'*+-.^_`|~"
        )
    if "\r" in value or "\n" in value:
        raise argparse.ArgumentTypeError("must be NAME:VALUE on one line")
    return name.strip(), value.strip()


def req(args: argparse.Namespace) -> int:
    """Send the request and print the reply. Raises the service's SophiaError."""
    settings = load(Settings)
    payload = _payload(_read_stdin() if args.body == "-" else args.body)
    headers = dict(args.header)
    reply = run_async(_send, settings, args.subject, payload, headers, args.timeout)
    raise_for_error(reply)
    print(_show(reply))
    return 0


def _read_stdin() -> str:
    """The body from stdin. Raises BadRequestError when it is not UTF-8 text."""
    try:
        return sys.stdin.read()
    except UnicodeDecodeError:
        raise BadRequestError("body: stdin is not UTF-8 text") from None


def _payload(body: str) -> bytes:
    """The body as sent: checked to be JSON first. Raises BadRequestError."""
    if not body.strip():
        return b""
    try:
        msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequestError(f"body is not valid JSON: {decode_problem(exc)}") from None
    return body.encode()


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
