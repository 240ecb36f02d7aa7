"""What every fuzz input must get back, and the counts the figure line reports.

The rules, for every input on every channel: a reply within the bound (no reply is a hang);
never a 500; a refusal is a 4xx whose text names the problem (a field, ``$`` path, or for
bytes that are no request at all the body) and never quotes internals; 503 only from the
services this machine lacks (the infra agent's Pulumi CLI and GPU cloud), and only for input
that fits the schema (bad input is a 400 first); a value that does
not fit the published schema is never accepted; every accepted write is read back at the end
(:class:`Writes`).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: services that answer 503 here once the input has passed, and what such a text must hold:
#: the infra agent (no pulumi CLI, no GPU key); the gateway when the scripted model's answer
#: (``{"answer": …}``) does not fit a random ``response_schema`` (every attempt invalid_output)
UNAVAILABLE_HERE = {"infra": "", "llm": "invalid_output"}
#: words of a refusal of bytes that are not a request (no field to name)
BODY_WORDS = (
    "body",
    "json",
    "messagepack",
    "malformed",
    "truncated",
    "utf-8",
    "expected",
    "nested",
    "parameters",  # JSON-RPC's own: "Invalid request parameters"
    "unknown tool",
    "$",
)
#: what the edge's HTTP API takes besides the body (a refusal may name these instead)
EDGE_PARAMETERS = {"Sophia-Namespace", "?namespace"}
#: 4xx codes that are about the call, not a field of it
NOT_ABOUT_A_FIELD = {401, 402, 403, 409, 413, 429}


@dataclass(frozen=True)
class Reply:
    """What one input got: ``status`` 200 for an answer, the error code, or 0 for none."""

    status: int
    error: str = ""
    body: bytes = b""

    @property
    def hang(self) -> bool:
        return self.status == 0

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Tally:
    """Counts across one pytest run (thread-safe: the stack's loop and the tests share it)."""

    by_channel: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    unreadable: int = 0
    read_back: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, channel: str, reply: Reply) -> None:
        with self._lock:
            self.by_channel[channel] += 1
            self.statuses[reply.status] += 1

    def violation(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    def figure(self) -> dict[str, Any]:
        statuses = self.statuses
        return {
            "figure": "fuzz",
            "inputs": sum(self.by_channel.values()),
            "by_channel": dict(sorted(self.by_channel.items())),
            "500s": statuses[500],
            "hangs": statuses[0],
            "rejected_4xx": sum(n for s, n in statuses.items() if 400 <= s < 500),
            "unavailable_503": statuses[503],
            "other_5xx": sum(n for s, n in statuses.items() if s > 500 and s != 503),
            "accepted": statuses[200],
            "read_back": self.read_back,
            "unreadable": self.unreadable,
            "violations": len(self.violations),
        }


def names_problem(text: str, fields: set[str], body: bool) -> bool:
    """Whether a refusal's text says what was wrong: a field of the schema or a ``$`` path;
    for a body that is no object (or no JSON) also what was wrong with the body."""
    lowered = text.lower()
    named = fields | EDGE_PARAMETERS
    if "$" in text or text.startswith("body:"):  # a path, or the edge's body as a whole
        return True
    if any(f"{name}:" in text or f"`{name}`" in text for name in named):
        return True
    return body and any(word in lowered for word in BODY_WORDS)


def judge(
    *,
    where: str,
    service: str,
    reply: Reply,
    fits: bool | None,
    fields: set[str],
    body: bool,
    own_deadline: bool = False,
) -> str | None:
    """The rule ``reply`` breaks, or None. ``fits``: whether the input was valid against the
    published schema (None: raw bytes, no value to validate); ``body``: the input was no
    object, so a refusal may name the body instead of a field; ``own_deadline``: the request
    set a ``timeout_s`` under a second, so "deadline passed" (408, 504 at the edge) is its
    answer."""
    if reply.hang:
        return f"{where}: no reply within the bound"
    if own_deadline and reply.status in (408, 504):  # what the caller asked for
        return None
    if reply.status == 500 or (reply.status > 500 and reply.status != 503):
        return f"{where}: {reply.status} {reply.error!r}"
    if reply.status == 503 and UNAVAILABLE_HERE.get(service, "\x00") not in reply.error:
        return f"{where}: 503 from a service that should be available: {reply.error!r}"
    if reply.status == 503 and fits is False:  # bad input is a 400 before anything is missed
        return f"{where}: 503 for a value that does not fit the schema: {reply.error!r}"
    if reply.status == 200 and fits is False:
        return f"{where}: accepted a value that does not fit the published schema"
    if 400 <= reply.status < 500:
        if not reply.error or reply.error == "internal error" or len(reply.error) > 200:
            return f"{where}: {reply.status} without a usable text: {reply.error!r}"
        if reply.status not in NOT_ABOUT_A_FIELD and not names_problem(reply.error, fields, body):
            return f"{where}: {reply.status} names no field: {reply.error!r}"
    return None


@dataclass
class Writes:
    """Accepted writes, to read back once the fuzz is over: (kind, key) pairs."""

    items: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, target_id: str, request: Any, reply: Reply) -> None:
        """Keep what a write that was accepted needs to be read back."""
        if reply.status != 200 or not isinstance(request, dict):
            return
        answer = reply.json()
        key: dict[str, Any] | None = None
        if target_id == "memory.store":
            key = {"id": answer["id"]}
        elif target_id == "memory.session.save":
            key = {
                "session_id": request["session_id"],
                "namespace": request.get("namespace", "default"),
            }
        elif target_id == "tasks.submit":
            key = {"task_id": answer["task_id"]}
        if key is not None:
            with self._lock:
                self.items.append((target_id, key))
