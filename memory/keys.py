"""Every L1 (hot) and L4 (archive) key the memory engine uses, built in one place.

Keys are pure functions of their parts. A part the caller chose (a namespace, a session id)
is percent-encoded in L1 keys, so a ``:`` inside it can never make two keys meet; session
keys in L4 carry a digest of those parts instead, so they stay far below S3's 1024 bytes
whatever the ids hold. Item and cache-entry ids are UUIDs of ours and go in as they are
(``items/<id>`` is what archives already hold).
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote

import msgspec

from bus.schemas.memory import SearchRequest


def _part(value: str) -> str:
    """``value`` percent-encoded: letters, digits and ``_.-~`` stay, ``:`` and ``/`` do not."""
    return quote(value, safe="", errors="surrogatepass")


def _digest(*parts: str) -> str:
    joined = "/".join(_part(p) for p in parts)  # unambiguous: no part holds a bare "/"
    return hashlib.sha256(joined.encode()).hexdigest()[:32]


# ---- L1 -------------------------------------------------------------------------------------


def item(ident: str) -> str:
    """An item as ``get`` answers it."""
    return f"item:{ident}"


def generation(namespace: str | None) -> str:
    """The counter a write to ``namespace`` bumps, so cached searches over it go stale;
    ``None``: the counter every write bumps (searches over every namespace)."""
    return "gen*" if namespace is None else f"gen:{_part(namespace)}"


def search(generation: int, reply_bytes: int, request: SearchRequest) -> str:
    """A search's answer: the request, the namespace's generation and the reply budget (two
    agents with different budgets may share one L1)."""
    material = msgspec.json.encode([generation, reply_bytes, request])
    return "search:" + hashlib.sha256(material).hexdigest()


def session(namespace: str, session_id: str) -> str:
    """The latest saved context of a session."""
    return f"session:{_part(namespace)}:{_part(session_id)}"


def cache_entry(entry_id: str) -> str:
    """A cached model response by its exact prompt."""
    return f"cache:{entry_id}"


# ---- L4 -------------------------------------------------------------------------------------


def archived_item(ident: str) -> str:
    """The whole body of an item too large for L3."""
    return f"items/{ident}"


def archived_session(namespace: str, session_id: str, version: int) -> str:
    """A version of a session's context that a later save replaced."""
    return f"sessions/{_digest(namespace, session_id)}/{version}"


# ---- L2 and L3 --------------------------------------------------------------------------------


def cached_calls(model: str) -> str:
    """The L2 namespace of one model's cached prompts (stored in every point's payload)."""
    return f"cache:{model}"


def space_model(purpose: str) -> str:
    """The L3 meta key naming the model whose vectors fill the ``purpose`` space."""
    return f"model:{purpose}"
