"""Schemas every agent shares: the empty request, health, error bodies, dead letters."""

from __future__ import annotations

import msgspec


class Empty(msgspec.Struct, kw_only=True):
    """A request that carries no input (an empty payload decodes as this)."""


class Health(msgspec.Struct, kw_only=True):
    """What an agent instance reports about itself, measured when asked."""

    service: str
    id: str
    version: str
    status: str  # "ok" | "degraded"
    uptime_s: float
    nats_rtt_ms: float
    nats_connected: bool
    work_in_flight: int = 0
    work_max_in_flight: int = 0
    consumer_lag: int | None = None  # messages waiting on the service's durable consumer
    consumer_ack_pending: int | None = None
    requests: int = 0
    errors: int = 0
    details: dict[str, str] = msgspec.field(default_factory=dict)


class ErrorBody(msgspec.Struct, kw_only=True):
    """Body of a service-error reply, beside the Nats-Service-Error headers."""

    error: str
    code: int


class DeadLetter(msgspec.Struct, kw_only=True):
    """A work item that exhausted its deliveries or was refused, as kept in SOPHIA_DLQ."""

    service: str
    subject: str
    headers: dict[str, str]
    payload: str  # the original bytes, base64 when not valid UTF-8 (see encoding)
    encoding: str  # "utf-8" | "base64"
    deliveries: int
    error: str
    code: int
    stream_seq: int
    failed_at: float
    truncated: bool = False  # the payload was cut to fit the bus (headers dropped too)
    payload_bytes: int = 0  # the original payload's size
