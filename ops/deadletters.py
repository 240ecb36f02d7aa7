"""The dead-letter stream seen by an operator: list, read, replay, purge.

A dead letter's id is its sequence in the DLQ stream. Guarantees: replay publishes
the original payload and headers to the original subject with a fresh
``Nats-Msg-Id`` (so the duplicate window does not drop it) and deletes the letter
only after JetStream acknowledged that publish; purge removes only this install's
letters (optionally one service's).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck

from bus.client import MSG_ID_HEADER
from bus.errors import BadRequestError, NotFoundError, UnavailableError
from bus.schemas.common import DeadLetter
from bus.subjects import Subjects

_decoder = msgspec.json.Decoder(DeadLetter)


@dataclass(frozen=True, slots=True)
class Entry:
    """One message of the DLQ stream: its id and the letter (None when it does not decode)."""

    id: int
    subject: str
    letter: DeadLetter | None


class DeadLetters:
    """The DLQ stream of one install (``Subjects.dlq_stream``)."""

    def __init__(self, js: JetStreamContext, subjects: Subjects) -> None:
        self.js = js
        self.subjects = subjects
        self.stream = subjects.dlq_stream

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

        Raises NotFoundError, BadRequestError (subject outside this install),
        UnavailableError (no stream took the publish; the letter is kept).
        """
        letter = await self.get(letter_id)
        if not letter.subject.startswith(f"{self.subjects.prefix}."):
            raise BadRequestError(f"dead letter {letter_id}: subject outside this install")
        headers = dict(letter.headers)
        # Fresh per letter, yet the same on a retried replay of the same letter.
        headers[MSG_ID_HEADER] = f"replay-{letter_id}-{int(letter.failed_at * 1000)}"
        try:
            ack = await self.js.publish(letter.subject, payload_bytes(letter), headers=headers)
        except nats.errors.NoRespondersError:
            raise UnavailableError(f"no stream takes {letter.subject}") from None
        except (nats.errors.TimeoutError, nats.errors.ConnectionClosedError):
            raise UnavailableError(f"publish to {letter.subject} not acknowledged") from None
        await self.js.delete_msg(self.stream, letter_id)
        return letter, ack

    async def purge(self, service: str | None = None) -> int:
        """Remove every letter (of ``service`` when given); returns how many there were."""
        count = await self.count(service)
        if count:
            await self.js.purge_stream(self.stream, subject=self._filter(service))
        return count


def payload_bytes(letter: DeadLetter) -> bytes:
    """The original payload bytes. Raises BadRequestError for an unknown encoding."""
    if letter.encoding == "utf-8":
        return letter.payload.encode()
    if letter.encoding == "base64":
        return base64.b64decode(letter.payload)
    raise BadRequestError(f"dead letter payload encoding {letter.encoding!r} is unknown")


def _decode(data: bytes | None) -> DeadLetter | None:
    try:
        return _decoder.decode(data or b"")
    except msgspec.DecodeError:
        return None
