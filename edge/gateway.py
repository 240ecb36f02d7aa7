"""The one thing the edge does for every call: check it, make one bus request, account for it.

Guarantee: :meth:`Gateway.call` either returns the agent's reply payload or raises a
``SophiaError`` whose description is safe to show (the bus's own texts, which name subjects,
are replaced); every call, refused ones included, yields exactly one audit event. A call
never waits past ``edge_call_timeout_s``, or past its own ``timeout_s`` (the wait an endpoint
such as ``tasks.wait`` was asked for, already bounded by its schema) and
:data:`REPLY_GRACE_S` when that is longer; cancelling it abandons the bus request and
publishes a :class:`~bus.schemas.edge.CallCancelled` event so the agent may stop too.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import anyio
import msgspec
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from bus import codec, metrics, wire
from bus.client import Bus, raise_for_service_error
from bus.errors import (
    BadRequestError,
    ForbiddenError,
    NotFoundError,
    SophiaError,
    TimeoutError_,
    UnavailableError,
    describe,
)
from bus.schemas.edge import CALL_ID_HEADER, EDGE_SERVICE, CallCancelled
from edge.access import Principal
from edge.audit import Auditor
from edge.catalog import Catalog, Endpoint
from edge.traces import trace_id_of

log = logging.getLogger("sophia.edge")
_ids = random.Random()  # seeded from os.urandom once; ids need uniqueness, not secrecy

#: How long past a request's own ``timeout_s`` the edge waits for the reply that ends it.
REPLY_GRACE_S = 5.0


def http_status(code: int) -> int:
    """The HTTP status for a service-error code: 4xx and 503 as they are, a bus timeout is the
    gateway's (504), any other 5xx is 500."""
    if code == 408:
        return 504
    return code if 400 <= code < 500 or code == 503 else 500


def new_call_id() -> str:
    """A unique id for one call (it names the call in audit and cancel events; not a secret)."""
    return f"{_ids.getrandbits(128):032x}"


class Gateway:
    """Checks, forwards and audits calls to public endpoints."""

    def __init__(self, bus: Bus, catalog: Catalog, auditor: Auditor, timeout_s: float) -> None:
        self.bus = bus
        self.catalog = catalog
        self.auditor = auditor
        self.timeout_s = timeout_s
        self._cancel_subject = bus.subjects.event("edge", "cancel")

    def resolve(self, principal: Principal, service: str, name: str) -> Endpoint:
        """The public endpoint ``service``/``name`` if ``principal`` may call it: its scopes
        reach it and its tool allow-list (``--tools``) keeps it, as for MCP.

        Raises NotFoundError (unknown or not public), ForbiddenError (outside the token).
        """
        endpoint = self.catalog.get(service, name)
        if endpoint is None or not endpoint.public:
            raise NotFoundError("no such public endpoint")
        if not principal.may_call(service, name, endpoint.access):
            raise ForbiddenError(f"token {principal.name!r} may not call {service}/{name}")
        if not principal.lists(endpoint.tool_name):
            raise ForbiddenError(
                f"token {principal.name!r} may not call {service}/{name} (outside its tools)"
            )
        return endpoint

    async def call(
        self,
        principal: Principal,
        endpoint: Endpoint,
        args: Any,
        payload: bytes,
        *,
        transport: str,
        call_id: str,
    ) -> bytes:
        """Validate ``args`` (decoded ``payload``), send ``payload``, return the reply payload.

        Raises BadRequestError naming the field, the agent's SophiaError, UnavailableError,
        TimeoutError_ (code 408, HTTP 504).
        """
        started = time.perf_counter()
        span = trace.get_current_span()
        status = 499  # "client closed request": what remains when the call is cancelled
        try:
            reply = await self._forward(endpoint, args, payload, call_id)
            status = 200
            return reply
        except SophiaError as exc:
            status = http_status(exc.code)
            span.set_status(Status(StatusCode.ERROR, exc.description))
            raise
        except Exception:
            status = 500
            raise
        finally:
            self.auditor.record(
                principal=principal.name,
                transport=transport,
                service=endpoint.service,
                endpoint=endpoint.name,
                code=status,
                started=started,
                call_id=call_id,
                trace_id=trace_id_of(span),
                request_bytes=len(payload),
            )
            _measure(endpoint, status, started)
            if status == 499:
                await self._cancelled(call_id)

    async def _cancelled(self, call_id: str) -> None:
        """Tell the agent that the caller cancelled, even though the caller is cancelled."""
        with anyio.move_on_after(2, shield=True):
            await self._publish_cancel(CallCancelled(call_id=call_id, reason="client"))

    async def _forward(self, endpoint: Endpoint, args: Any, payload: bytes, call_id: str) -> bytes:
        try:
            codec.check_nesting(args)
        except msgspec.ValidationError as exc:
            raise BadRequestError(str(exc)) from None
        problem = endpoint.validator.problem(args)
        if problem is not None:
            raise BadRequestError(problem)
        try:
            msg = await self.bus.request_raw(
                endpoint.subject, payload, {CALL_ID_HEADER: call_id}, self.wait_s(args)
            )
        except UnavailableError:
            self.catalog.refresh_soon()
            raise UnavailableError(f"service {endpoint.service} is unavailable") from None
        except TimeoutError_:
            raise TimeoutError_(f"{endpoint.tool_name} did not answer in time") from None
        raise_for_service_error(msg)
        return msg.data

    def wait_s(self, args: Any) -> float:
        """How long to wait for the reply to ``args`` (already validated against the schema,
        which bounds a ``timeout_s`` in it)."""
        asked = args.get("timeout_s") if isinstance(args, dict) else None
        if isinstance(asked, int | float) and not isinstance(asked, bool) and asked > 0:
            return max(self.timeout_s, float(asked) + REPLY_GRACE_S)
        return self.timeout_s

    async def _publish_cancel(self, event: CallCancelled) -> None:
        try:
            await wire.publish(self.bus.nc, self._cancel_subject, codec.encode(event))
        except Exception:  # best effort: the caller has gone already
            log.warning("cancel_publish_failed", extra={"call_id": event.call_id})

    async def announce_cancel(self, event: CallCancelled) -> None:
        """Tell every replica (and agents) that a client cancelled a call."""
        await self._publish_cancel(event)


def _measure(endpoint: Endpoint, status: int, started: float) -> None:
    """Count the call as the edge's request (the endpoint a tool name the catalog knows)."""
    code = "ok" if status == 200 else str(status)
    labels = {"service": EDGE_SERVICE, "endpoint": endpoint.tool_name, "code": code}
    metrics.request_duration.record(time.perf_counter() - started, labels)


def decode_json(payload: bytes) -> Any:
    """Decode a request body (within the nesting limit). Raises BadRequestError naming the
    problem (msgspec's words; the body itself is never quoted)."""
    try:
        return codec.decode(payload)
    except msgspec.DecodeError as exc:
        raise BadRequestError(f"body: {describe(exc)[1]}") from None
