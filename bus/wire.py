"""What one NATS message may carry, checked before anything is published.

nats-server closes the connection of a client that sends a message whose headers and payload
together exceed its ``max_payload``, and nats-py checks the payload alone: one oversize
message would cut a process off the bus. Every publish of Sophia's goes through
:func:`publish` (or :func:`check` before a ``request``), which counts the headers as nats-py
writes them, so such a message is refused here with a 413 and the connection is untouched.

Public nats-py API only: ``Client.max_payload`` and ``Client.publish``.
"""

from __future__ import annotations

from collections.abc import Mapping

from nats.aio.client import Client

from bus.errors import PayloadTooLargeError

_HEADER_LINE = len(b"NATS/1.0\r\n") + len(b"\r\n")  # the status line and the closing blank line
_PER_HEADER = len(b": \r\n")


def header_bytes(headers: Mapping[str, str] | None) -> int:
    """Bytes ``headers`` take in a message (at most: nats-py strips keys and values)."""
    if not headers:
        return 0
    return _HEADER_LINE + sum(
        len(key.encode()) + len(value.encode()) + _PER_HEADER for key, value in headers.items()
    )


def room(nc: Client, headers: Mapping[str, str] | None = None) -> int:
    """Payload bytes one message with ``headers`` may still carry on ``nc``."""
    return nc.max_payload - header_bytes(headers)


def check(
    nc: Client, payload: bytes, headers: Mapping[str, str] | None = None, what: str = "payload"
) -> None:
    """Raise PayloadTooLargeError (naming ``what``) unless the message fits ``max_payload``."""
    size = len(payload) + header_bytes(headers)
    if size > nc.max_payload:
        raise PayloadTooLargeError(
            f"{what}: {size} bytes is over the bus's limit of {nc.max_payload} bytes"
        )


async def publish(
    nc: Client,
    subject: str,
    payload: bytes,
    *,
    reply: str = "",
    headers: dict[str, str] | None = None,
    what: str = "payload",
) -> None:
    """``nc.publish`` after :func:`check`. Raises PayloadTooLargeError and what nats-py raises."""
    check(nc, payload, headers, what)
    await nc.publish(subject, payload, reply=reply, headers=headers)
