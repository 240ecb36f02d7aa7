"""Calling the bus: typed requests, durable work, events, each with trace context.

Guarantees: a request returns the reply decoded into its type or raises a
``SophiaError`` carrying the service's code; it never waits past its timeout and
fails with 503 at once when the NATS connection drops while it waits.
"""

from __future__ import annotations

import time
from typing import TypeVar

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck

from bus import codec, tracing, wire
from bus.config import Settings
from bus.connection import Link
from bus.errors import (
    BadRequestError,
    PayloadTooLargeError,
    StorageFullError,
    UnavailableError,
    error_from_code,
)
from bus.replies import ReplyMux
from bus.schemas.common import ErrorBody
from bus.subjects import Subjects, is_publishable

T = TypeVar("T")

ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"
MSG_ID_HEADER = "Nats-Msg-Id"
#: JetStream's error codes for "no space": insufficient resources, account resource limits,
#: insufficient memory, insufficient storage (nats-server's JSErrCodes)
STORAGE_FULL_CODES = frozenset({10023, 10002, 10028, 10047})
#: "stream store failed", which carries "maximum bytes exceeded" for a stream at max_bytes
STREAM_STORE_FAILED = 10077
#: pauses before asking again after "no responders" (see _request_once_more_if_unseen)
UNSEEN_PAUSES_S = (0.0, 0.05)


def raise_for_service_error(msg: Msg) -> None:
    """Raise the typed SophiaError a reply carries in its service-error headers, if any."""
    headers = msg.headers
    if headers and ERROR_CODE_HEADER in headers:
        try:
            code = int(headers[ERROR_CODE_HEADER])
        except ValueError:
            code = 500
        raise error_from_code(code, headers.get(ERROR_HEADER, "error"))


class Bus:
    """A NATS connection seen as Sophia's bus: requests, work, events."""

    def __init__(self, nc: Client, settings: Settings, link: Link | None = None) -> None:
        self.nc = nc
        self.settings = settings
        self.subjects = Subjects(settings.prefix)
        self.link = link
        self._js: JetStreamContext | None = None
        self._replies = ReplyMux(nc)
        if link is not None:
            link.on_lost(self._replies.fail_all)

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            self._js = self.nc.jetstream(timeout=self.settings.request_timeout_s)
        return self._js

    async def request_raw(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Msg:
        """Send one request and return the reply message, service errors included.

        Raises UnavailableError (no responder, connection lost), TimeoutError_,
        PayloadTooLargeError (over the server's max_payload: nothing was sent).
        """
        timeout = self.settings.request_timeout_s if timeout is None else timeout
        if self.link is not None and not self.link.connected:
            raise UnavailableError("bus connection is down")
        if not is_publishable(subject):
            raise BadRequestError(
                "subject: must be dot-separated tokens without spaces or wildcards"
            )
        with tracing.client_span(subject):
            headers = tracing.inject(dict(headers) if headers else None) or None
            wire.check(self.nc, payload, headers)
            try:
                return await self._request_once_more_if_unseen(subject, payload, headers, timeout)
            except nats.errors.NoRespondersError:
                raise UnavailableError(f"no service answers on {subject}") from None
            except nats.errors.MaxPayloadError:
                raise self._too_large(payload) from None
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                raise UnavailableError("bus connection is closed") from None
            except nats.errors.OutboundBufferLimitError:
                raise UnavailableError("bus connection is down") from None

    async def _request_once_more_if_unseen(
        self, subject: str, payload: bytes, headers: dict[str, str] | None, timeout: float
    ) -> Msg:
        """The request; after a no-responders answer, asked again after a round trip, and
        once more after a further ``UNSEEN_PAUSES_S`` pause.

        Why: nats-server (2.15 here) sometimes answers "no responders" to a request sent just
        after another connection's SUB was confirmed (its flush returned): measured about 1 in
        150 with two plain nats-py connections, never when the requester's own connection had
        made a round trip first or waited 20 ms. A no-responders answer means nobody received
        the request, so sending it again is safe; a service that is really absent costs at
        most two round trips and the pause.
        """
        started = time.monotonic()
        for pause in (*UNSEEN_PAUSES_S, None):
            try:
                return await self._replies.request(subject, payload, headers, timeout)
            except nats.errors.NoRespondersError:
                timeout -= time.monotonic() - started
                started = time.monotonic()
                if pause is None or timeout <= pause:
                    raise
            await anyio.sleep(pause)
            try:
                await self.nc.flush(timeout=max(0.001, min(timeout, 1.0)))
            except (nats.errors.TimeoutError, nats.errors.ConnectionClosedError):
                raise nats.errors.NoRespondersError from None
            timeout -= time.monotonic() - started
            started = time.monotonic()
        raise nats.errors.NoRespondersError  # not reached: the last turn re-raises

    async def request(
        self,
        service: str,
        endpoint: str,
        body: msgspec.Struct | None,
        reply_type: type[T],
        *,
        timeout: float | None = None,
        msgpack: bool = False,
    ) -> T:
        """Call ``<prefix>.<service>.<endpoint>`` and decode the reply into ``reply_type``.

        Raises the service's SophiaError (400, 404, 500…), UnavailableError, TimeoutError_.
        """
        subject = self.subjects.endpoint(service, endpoint)
        payload = codec.encode(body, msgpack) if body is not None else b""
        headers = {codec.CONTENT_TYPE: codec.MSGPACK} if msgpack else None
        reply = await self.request_raw(subject, payload, headers, timeout)
        raise_for_service_error(reply)
        try:
            return codec.decode(reply.data, reply_type, codec.is_msgpack(reply.headers))
        except msgspec.DecodeError as exc:
            raise BadRequestError(f"reply from {subject} does not fit: {exc}") from None

    async def submit_work(
        self, service: str, item: msgspec.Struct, *, msg_id: str, msgpack: bool = False
    ) -> PubAck:
        """Put one durable work item on ``<prefix>.work.<service>``.

        ``msg_id`` (``Nats-Msg-Id``) makes a repeated publish within the stream's
        duplicate window a no-op. Raises UnavailableError when JetStream does not ack.
        """
        subject = self.subjects.work(service)
        headers = {MSG_ID_HEADER: msg_id}
        if msgpack:
            headers[codec.CONTENT_TYPE] = codec.MSGPACK
        return await self._publish_durable(subject, codec.encode(item, msgpack), headers)

    async def emit(self, event: msgspec.Struct, *tokens: str, msg_id: str | None = None) -> PubAck:
        """Publish an event on ``<prefix>.events.<tokens…>`` (kept in the events stream)."""
        headers = {MSG_ID_HEADER: msg_id} if msg_id else {}
        return await self._publish_durable(
            self.subjects.event(*tokens), codec.encode(event), headers
        )

    async def _publish_durable(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> PubAck:
        with tracing.client_span(subject, "publish"):
            tracing.inject(headers)
            wire.check(self.nc, payload, headers)
            try:
                return await self.js.publish(subject, payload, headers=headers)
            except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError):
                # nats-py reports "no responders" as NoStreamResponseError: no stream takes the
                # subject, or the one that does has no leader yet (a cluster node just died)
                raise UnavailableError(f"no stream takes {subject} now") from None
            except nats.errors.MaxPayloadError:
                raise self._too_large(payload) from None
            except (nats.errors.TimeoutError, nats.errors.ConnectionClosedError) as exc:
                raise UnavailableError(f"publish to {subject} not acknowledged") from exc
            except nats.js.errors.APIError as exc:
                if storage_full(exc):
                    raise StorageFullError(
                        f"bus storage is full: {subject} was not stored ({exc.description}); "
                        "it is accepted again once space returns (consumers ack, a purge, a "
                        "limit raised)"
                    ) from None
                if exc.code == 503:  # JetStream temporarily unavailable (an election, say)
                    raise UnavailableError(f"JetStream cannot take {subject} now") from None
                raise

    def _too_large(self, payload: bytes) -> PayloadTooLargeError:
        limit = self.nc.max_payload
        return PayloadTooLargeError(
            f"payload: {len(payload)} bytes is over the bus's limit of {limit} bytes"
        )

    async def rtt_ms(self) -> float:
        """Measure one round trip to the NATS server. Raises UnavailableError."""
        start = time.perf_counter()
        try:
            await self.nc.flush(timeout=2)
        except Exception as exc:  # flush raises several nats-py types
            raise UnavailableError("NATS does not answer") from exc
        return (time.perf_counter() - start) * 1000


def storage_full(exc: nats.js.errors.APIError) -> bool:
    """Whether JetStream refused a write for want of space: its server, account or stream
    storage is full (``max_file_store``, an account limit, a stream's ``max_bytes``)."""
    if exc.err_code in STORAGE_FULL_CODES:
        return True
    text = (exc.description or "").lower()
    return exc.err_code == STREAM_STORE_FAILED and "maximum" in text


def service_error(code: int, description: str) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a service-error reply (DESIGN §3)."""
    body = codec.encode(ErrorBody(error=description, code=code))
    return body, {ERROR_HEADER: description, ERROR_CODE_HEADER: str(code)}
