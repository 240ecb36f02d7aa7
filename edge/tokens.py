"""Bearer tokens: created once, stored as SHA-256 in the config bucket, seen by every replica.

A token is ``sph_`` and 43 URL-safe characters (256 random bits), so one SHA-256 is enough to
store it safely (no slow KDF is needed for a secret that cannot be guessed). The record lives
under ``edge.tokens.<name>`` in ``<prefix>_config``; :class:`TokenCache` keeps every replica's
view current through a KV watch. Revocation does not wait for the watch: ``sophia token
revoke`` asks every edge replica on ``<prefix>.edge.tokens.sync`` to re-read the token and
returns once each has answered that it is gone (:meth:`TokenCache.recheck`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Iterable

import anyio
import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from bus.errors import BadRequestError, ConflictError, NotFoundError
from bus.records import watching
from bus.schemas.edge import TOKEN_KEY_PREFIX, TokenRecord
from bus.subjects import is_token
from edge.access import Principal, check_pattern, check_scope

log = logging.getLogger("sophia.edge")

TOKEN_PREFIX = "sph_"
_decoder = msgspec.json.Decoder(TokenRecord)
LIST_TIMEOUT_S = 5.0


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    """Return ``name`` when it can name a token. Raises BadRequestError."""
    if len(name) > 64 or not is_token(name):
        raise BadRequestError("token name: 1 to 64 letters, digits, '_' or '-'")
    return name


def scope_problems(scopes: Iterable[str], services: dict[str, dict[str, str]]) -> list[str]:
    """What is wrong with ``scopes`` given the running ``services`` ({service: {endpoint:
    access}}): a scope naming an endpoint or class the service does not have. A service not
    running now cannot be checked; :func:`unseen_services` names those."""
    problems = []
    for scope in scopes:
        service, _, what = scope.partition(":")
        endpoints = services.get(service)
        if endpoints is None or what in ("", "*"):
            continue
        if what == "read" and "read" not in endpoints.values():
            problems.append(f"scope {scope}: {service} has no read-only endpoints")
        elif what != "read" and what not in endpoints:
            problems.append(
                f"scope {scope}: {service} has no endpoint {what} "
                f"(it has: {', '.join(sorted(endpoints))})"
            )
    return problems


def unseen_services(scopes: Iterable[str], services: dict[str, dict[str, str]]) -> list[str]:
    """Services the scopes name that are not running now (so could not be checked)."""
    return sorted({s.partition(":")[0] for s in scopes if s != "*"} - set(services))


async def create_token(
    kv: KeyValue, name: str, scopes: list[str], tools: list[str] | None = None
) -> str:
    """Store a new token's hash under ``name`` and return the token (never retrievable again).

    Raises BadRequestError for a bad name, scope or pattern, ConflictError when ``name``
    exists.
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
        raise ConflictError(f"token {name!r} exists; revoke it first") from None
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
    records = []
    with anyio.fail_after(LIST_TIMEOUT_S):
        async with watching(kv, TOKEN_KEY_PREFIX + ">", ignore_deletes=True) as watcher:
            async for entry in watcher:
                if entry is None:  # the current values are through
                    break
                try:
                    records.append(_decoder.decode(entry.value or b""))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
    return sorted(records, key=lambda r: r.name)


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
                self._apply(entry.key, entry.value if entry.operation is None else None)

    async def recheck(self, name: str) -> None:
        """Read token ``name`` from the bucket now and apply what is there (revocation waits
        for this, not for the watch)."""
        key = TOKEN_KEY_PREFIX + check_name(name)
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.NotFoundError:
            self._apply(key, None)
            return
        self._apply(key, entry.value)

    def _apply(self, key: str, value: bytes | None) -> None:
        old = self._digest_of.pop(key, None)
        if old is not None:
            self._by_digest.pop(old, None)
        if not value:
            log.info("token_removed", extra={"key": key})
            return
        try:
            record = _decoder.decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("token_record_unreadable", extra={"key": key})
            return
        self._digest_of[key] = record.sha256
        self._by_digest[record.sha256] = Principal(
            name=record.name, scopes=tuple(record.scopes), tools=tuple(record.tools)
        )
