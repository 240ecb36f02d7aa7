"""What one reply of the memory agent may carry: a budget in encoded bytes.

Guarantee: whatever a write accepts, the reply that reads it back fits the budget — a write
whose later reply would not is refused (413) — and a search answers with the best hits that
fit, saying when it left some out. A reply is counted the way it would be sent: JSON (which
spells a control character in 6 bytes) or MessagePack (9 bytes per float), whichever is larger.
"""

from __future__ import annotations

import msgspec

from bus.errors import PayloadTooLargeError
from bus.limits import HEADER_ROOM, MAX_NESTING
from bus.schemas.memory import Hit, SearchResult

NATS_DEFAULT_MAX_PAYLOAD = 1_048_576
DEFAULT_REPLY_BYTES = NATS_DEFAULT_MAX_PAYLOAD - HEADER_ROOM
#: levels a hit's metadata may nest: a search reply holds it inside the result, its list of
#: hits and the hit, and a reply nested deeper than MAX_NESTING is refused by its reader
HIT_METADATA_NESTING = MAX_NESTING - 3
_ARRAY_HEADER = 5  # MessagePack's largest array header; JSON needs only "[]"

_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


def encoded_size(value: object) -> int:
    """Bytes ``value`` takes on the wire, as JSON or MessagePack, whichever is larger."""
    return max(len(_json.encode(value)), len(_msgpack.encode(value)))


class ReplyBudget:
    """At most ``max_bytes`` per reply (the bus's ``max_payload`` less room for headers)."""

    def __init__(self, max_bytes: int = DEFAULT_REPLY_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes: must be at least 1")
        self.max_bytes = max_bytes

    def fits(self, reply: msgspec.Struct) -> bool:
        return encoded_size(reply) <= self.max_bytes

    def fits_hit(self, hit: Hit) -> bool:
        """Whether a search reply can carry ``hit`` (as its only hit)."""
        return not self.best_hits([hit]).truncated

    def refusal(self, field: str) -> PayloadTooLargeError:
        """The 413 for a write whose reply would not fit, naming ``field``."""
        return PayloadTooLargeError(
            f"{field}: would not fit in a reply of at most {self.max_bytes} bytes"
        )

    def require(self, reply: msgspec.Struct, field: str) -> None:
        """Raise PayloadTooLargeError naming ``field`` unless ``reply`` fits."""
        if not self.fits(reply):
            raise self.refusal(field)

    def best_hits(self, hits: list[Hit]) -> SearchResult:
        """The longest head of ``hits`` (best first) whose reply fits; ``truncated`` when
        some were left out."""
        used = encoded_size(SearchResult(truncated=True)) + _ARRAY_HEADER
        for count, hit in enumerate(hits):
            used += encoded_size(hit) + 1  # a comma between hits in JSON
            if used > self.max_bytes:
                return SearchResult(hits=hits[:count], truncated=True)
        return SearchResult(hits=hits)
