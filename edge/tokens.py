"""Bearer tokens: created once, stored as SHA-256 in the config bucket, seen by every replica.

A token is ``sph_`` and 43 URL-safe characters (256 random bits), so one SHA-256 is enough to
store it safely (no slow KDF is needed for a secret that cannot be guessed). The record lives
under ``edge.tokens.<name>`` in ``<prefix>_config``; :class:`TokenCache` keeps every replica's
view current through a KV watch, so a revocation takes effect within one round trip.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from bus.errors import BadRequestError, NotFoundError
from bus.records import watching
from bus.schemas.edge import TOKEN_KEY_PREFIX, TokenRecord
from edge.access import Principal, check_pattern, check_scope

log = logging.getLogger("sophia.edge")

TOKEN_PREFIX = "sph_"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_decoder = msgspec.json.Decoder(TokenRecord)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    """Return ``name`` when it can name a token. Raises BadRequestError."""
    if not _NAME.match(name):
        raise BadRequestError("token name: 1 to 64 letters, digits, '_' or '-'")
    return name


async def create_token(
    kv: KeyValue, name: str, scopes: list[str], tools: list[str] | None = None
) -> str:
    """Store a new token's hash under ``name`` and return the token (never retrievable again).

    Raises BadRequestError for a bad name, scope or pattern, or when ``name`` exists.
    """
    check_name(name)
    try:
        scopes = [check_scope(s) for s in scopes] or ["*"]
        tools = [check_pattern(p) for p in tools or []]
    except ValueError as exc:
        raise BadRequestError(str(exc)) from None
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = TokenRecord(
        name=name, sha256=digest(token), scopes=scopes, tools=tools, created_at=time.time()
    )
    try:
        await kv.create(TOKEN_KEY_PREFIX + name, msgspec.json.encode(record))
    except nats.js.errors.KeyWrongLastSequenceError:
        raise BadRequestError(f"token {name!r} exists; revoke it first") from None
    return token


async def revoke_token(kv: KeyValue, name: str) -> None:
    """Remove the token ``name`` and its history. Raises NotFoundError when there is none."""
    check_name(name)
    try:
        await kv.get(TOKEN_KEY_PREFIX + name)
    except nats.js.errors.NotFoundError:
        raise NotFoundError(f"no token named {name!r}") from None
    await kv.purge(TOKEN_KEY_PREFIX + name)  # purge: no earlier revision keeps the hash


async def list_tokens(kv: KeyValue) -> list[TokenRecord]:
    """Every stored token record (hashes included; callers show names and scopes only)."""
    try:
        keys = await kv.keys(filters=[TOKEN_KEY_PREFIX])
    except nats.js.errors.NoKeysError:
        return []
    records = []
    for key in sorted(k for k in keys if k.startswith(TOKEN_KEY_PREFIX)):
        try:
            records.append(_decoder.decode((await kv.get(key)).value or b""))
        except (nats.js.errors.NotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            continue
    return records


class TokenCache:
    """Every replica's in-memory view of the tokens, kept current by a KV watch."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._by_digest: dict[str, Principal] = {}
        self._digest_of: dict[str, str] = {}  # KV key -> digest, to forget on delete

    def principal(self, token: str) -> Principal | None:
        """The principal ``token`` stands for, or None when it is unknown or revoked."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        return self._by_digest.get(digest(token))

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Watch the tokens until cancelled; reports ``started()`` once the initial set is in."""
        started = False
        async with watching(self._kv, TOKEN_KEY_PREFIX + ">") as watcher:
            async for entry in watcher:
                if entry is None:
                    if not started:
                        task_status.started()
                        started = True
                    continue
                self._apply(entry)

    def _apply(self, entry: KeyValue.Entry) -> None:
        old = self._digest_of.pop(entry.key, None)
        if old is not None:
            self._by_digest.pop(old, None)
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            log.info("token_removed", extra={"key": entry.key})
            return
        try:
            record = _decoder.decode(entry.value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("token_record_unreadable", extra={"key": entry.key})
            return
        self._digest_of[entry.key] = record.sha256
        self._by_digest[record.sha256] = Principal(
            name=record.name, scopes=tuple(record.scopes), tools=tuple(record.tools)
        )
