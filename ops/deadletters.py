"""The dead-letter stream seen by an operator: list, read, replay, purge.

A dead letter's id is its sequence in the DLQ stream. Guarantees: replay publishes
the original payload and headers to the original subject with a fresh
``Nats-Msg-Id`` (so the duplicate window does not drop it) and deletes the letter
only after JetStream acknowledged that publish; a letter whose payload was truncated to
fit the DLQ is never replayed (what it keeps is not the item that failed); purge removes
only this install's letters (optionally one service's).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import PubAck

from bus import wire
from bus.client import MSG_ID_HEADER, Bus
from bus.errors import BadRequestError, ConflictError, NotFoundError, UnavailableError
from bus.schemas.common import DeadLetter
from bus.subjects import is_publishable

_decoder = msgspec.json.Decoder(DeadLetter)


class TruncatedLetterError(ConflictError):
    """The letter keeps only part of its payload (it had to fit the DLQ): not replayable."""

    default_description = "dead letter is truncated"


@dataclass(frozen=True, slots=True)
class Entry:
    """One message of the DLQ stream: its id and the letter (None when it does not decode)."""

    id: int
    subject: str
    letter: DeadLetter | None


class DeadLetters:
    """The DLQ stream of one install (``Subjects.dlq_stream``)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.js = bus.js
        self.subjects = bus.subjects
        self.stream = bus.subjects.dlq_stream

    def _filter(self, service: str | None) -> str:
        """The subject filter for one service, or all. Raises BadRequestError."""
        try:
            return self.subjects.dlq(service) if service else self.subjects.dlq_all
        except ValueError as exc:
            raise BadRequestError(str(exc)) from None

    async def entries(
        self, service: str | None = None, limit: int = 100
    ) -> tuple[list[Entry], int]:
        """The first ``limit`` letters (oldest first) and how many there are in all."""
        total = await self.count(service)
        entries: list[Entry] = []
        seq = 1
        while len(entries) < min(limit, total):
            try:
                raw = await self.js.get_msg(
                    self.stream, seq=seq, subject=self._filter(service), next=True
                )
            except nats.js.errors.NotFoundError:
                break
            entries.append(Entry(raw.seq or seq, raw.subject or "", _decode(raw.data)))
            seq = (raw.seq or seq) + 1
        return entries, total

    async def count(self, service: str | None = None) -> int:
        """How many letters the stream holds (for one service when given); 0 without a stream."""
        try:
            info = await self.js.stream_info(self.stream, subjects_filter=self._filter(service))
        except nats.js.errors.NotFoundError:
            return 0
        return sum((info.state.subjects or {}).values())

    async def get(self, letter_id: int) -> DeadLetter:
        """The letter with this id. Raises NotFoundError, BadRequestError (not a letter)."""
        try:
            raw = await self.js.get_msg(self.stream, seq=letter_id)
        except nats.js.errors.NotFoundError:
            raise NotFoundError(f"no dead letter {letter_id} in {self.stream}") from None
        letter = _decode(raw.data)
        if letter is None:
            raise BadRequestError(f"message {letter_id} in {self.stream} is not a dead letter")
        return letter

    async def replay(self, letter_id: int) -> tuple[DeadLetter, PubAck]:
        """Republish letter ``letter_id`` to its original subject, then delete it.

        Raises NotFoundError, TruncatedLetterError (409: its payload was cut to fit the
        DLQ), BadRequestError (subject outside this install, or a letter that cannot be
        sent as it is), UnavailableError (no stream took the publish; the letter is kept).
        """
        letter = await self.get(letter_id)
        if letter.truncated:
            raise TruncatedLetterError(
                f"dead letter {letter_id}: its payload was truncated to fit the DLQ "
                f"({letter.payload_bytes} bytes originally), so it cannot be replayed; "
                "`sophia dlq show` prints what it kept"
            )
        if not letter.subject.startswith(f"{self.subjects.prefix}."):
            raise BadRequestError(f"dead letter {letter_id}: subject outside this install")
        if not is_publishable(letter.subject):
            raise BadRequestError(f"dead letter {letter_id}: its subject cannot be published to")
        payload = original_payload(letter)
        headers = dict(letter.headers)
        # Fresh per letter, yet the same on a retried replay of the same letter.
        headers[MSG_ID_HEADER] = f"replay-{letter_id}-{int(letter.failed_at * 1000)}"
        wire.check(self.bus.nc, payload, headers, what=f"dead letter {letter_id}")
        try:
            ack = await self.js.publish(letter.subject, payload, headers=headers)
        except nats.errors.NoRespondersError:
            raise UnavailableError(f"no stream takes {letter.subject}") from None
        except (nats.errors.TimeoutError, nats.errors.ConnectionClosedError):
            raise UnavailableError(f"publish to {letter.subject} not acknowledged") from None
        except nats.errors.BadHeaderError:
            raise BadRequestError(f"dead letter {letter_id}: a header name is not valid") from None
        await self.js.delete_msg(self.stream, letter_id)
        return letter, ack

    async def purge(self, service: str | None = None) -> int:
        """Remove every letter (of ``service`` when given); returns how many there were."""
        count = await self.count(service)
        if count:
            await self.js.purge_stream(self.stream, subject=self._filter(service))
        return count


def original_payload(letter: DeadLetter) -> bytes:
    """The payload bytes the letter keeps (all of them unless ``truncated``).

    Raises BadRequestError for an unknown encoding or a payload that does not decode.
    """
    if letter.encoding == "utf-8":
        return letter.payload.encode()
    if letter.encoding != "base64":
        raise BadRequestError("dead letter: its payload encoding is unknown")
    try:
        return base64.b64decode(letter.payload, validate=True)
    except binascii.Error:
        raise BadRequestError("dead letter: its payload is not valid base64") from None


def original_size(letter: DeadLetter) -> int:
    """The size of the payload that failed (letters older than ``payload_bytes`` keep it all)."""
    if letter.payload_bytes:
        return letter.payload_bytes
    try:
        return len(original_payload(letter))
    except BadRequestError:
        return 0


def _decode(data: bytes | None) -> DeadLetter | None:
    try:
        return _decoder.decode(data or b"")
    except msgspec.DecodeError:
        return None
