"""Wire and stored schemas of the edge: audit, cancellation and progress events, tokens, sessions.

Subjects (all under the events stream, so they are replayable):
- ``<prefix>.events.edge.audit`` — one :class:`AuditEvent` per call through the edge;
- ``<prefix>.events.edge.cancel`` — a :class:`CallCancelled` when a client cancels a call.

A request the edge sends carries ``Sophia-Call-Id`` (:data:`CALL_ID_HEADER`), the id an agent
matches cancellations against. Progress: an endpoint whose request has a ``progress_subject``
field gets an inbox there when the MCP client asked for progress, and publishes one member
of :data:`bus.schemas.progress.Progress` (:class:`CallProgress`, or a kind of its own such as
the indexer's) to it; the edge relays each as ``notifications/progress``.

Stored values (KV): :class:`TokenRecord` under ``edge.tokens.<name>`` in ``<prefix>_config``,
:class:`SessionRecord` under the session id in ``<prefix>_sessions``.

Evolution rules (msgspec's): new fields get defaults, a field never changes type.
"""

from __future__ import annotations

from typing import Any

import msgspec

CALL_ID_HEADER = "Sophia-Call-Id"
EDGE_SERVICE = "edge"  # the edge's name in the NATS service API (``nats micro ls``)
TOKEN_KEY_PREFIX = "edge.tokens."


class AuditEvent(msgspec.Struct, kw_only=True):
    """Who called what through the edge, how it ended and how long it took — never the payload."""

    at: float  # unix seconds
    principal: str  # token name, or "local" for stdio
    transport: str  # "http" | "mcp-http" | "mcp-stdio"
    service: str
    endpoint: str
    outcome: str  # "ok" | "error" | "cancelled"
    code: int  # HTTP-style status: 200 on success
    latency_ms: float
    call_id: str = ""
    trace_id: str = ""
    request_bytes: int = 0


class CallCancelled(msgspec.Struct, kw_only=True):
    """A client gave up on a call: the edge stopped waiting; an agent may stop working on it."""

    call_id: str = ""
    session: str = ""  # MCP session id, when the call came over MCP
    request_id: str = ""  # the MCP request id as text
    reason: str = ""


class CallProgress(msgspec.Struct, kw_only=True, tag_field="type", tag="progress"):
    """How far a long call has come (``total`` 0 when unknown)."""

    progress: float
    total: float = 0.0
    message: str = ""


class TokenRecord(msgspec.Struct, kw_only=True):
    """A bearer token as stored: its SHA-256, never the token itself."""

    name: str
    sha256: str
    scopes: list[str] = msgspec.field(default_factory=lambda: ["*"])
    tools: list[str] = msgspec.field(default_factory=list)  # tool-name patterns; empty: all
    created_at: float = 0.0


class TokenSync(msgspec.Struct, kw_only=True):
    """Asked on ``<prefix>.edge.tokens.sync`` of every edge replica: re-read token ``name``."""

    name: str


class TokenSynced(msgspec.Struct, kw_only=True):
    """One replica's answer: its view of token ``name`` is the bucket's now."""

    id: str  # the replica's service-API instance id
    name: str


class SessionRecord(msgspec.Struct, kw_only=True):
    """An MCP session, so any edge replica can serve its next request."""

    principal: str
    protocol_version: str
    client: dict[str, Any] = msgspec.field(default_factory=dict)  # the initialize params
    tools: list[str] = msgspec.field(default_factory=list)  # the client's allow-list
    created_at: float = 0.0
