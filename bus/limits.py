"""Every input limit Sophia enforces, in one table; the README's "Limits" table is this one.

The wire schemas declare the per-field limits in their ``msgspec.Meta`` (so the JSON Schemas
published with each endpoint, the MCP tool schemas and ``/openapi.json`` state them, and
msgspec enforces them when a request is decoded); the bus and the edge enforce the message
limits on every message. Anything beyond a limit is a 400 (413 for sizes) naming the field.

What a limit guarantees: whatever was accepted can be read, searched and deleted again —
nothing is stored that its own reply could not carry back over the bus.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

# ---- every message ------------------------------------------------------------------------

#: objects and arrays inside each other in one message; deeper is a 400 (Python's recursion
#: limit, which a deeper value would reach in decoders and encoders, is 1000)
MAX_NESTING = 32
#: bytes of NATS headers (trace context, call id, content type) kept free below the server's
#: max_payload: the edge takes bodies of at most max_payload minus this
HEADER_ROOM = 4096
#: characters of a service-error text (bus and edge); it names the problem, never the input
MAX_ERROR_TEXT = 200

# ---- memory ---------------------------------------------------------------------------------

TEXT_CHARS = 524_288  # an item's text, a session summary, a cached prompt or response
QUERY_CHARS = 8_192
NAMESPACE_CHARS = 128
ID_CHARS = 64
SESSION_ID_CHARS = 256
MODEL_CHARS = 256
PATH_CHARS = 4_096
PATH_PART_CHARS = 255  # one component of a path (a file name)
TAGS = 64  # tags in a search filter
MAX_K = 100  # hits per search

# ---- tasks, the model gateway, infra ------------------------------------------------------

SUBJECT_CHARS = 256  # a progress or stream subject a caller names (its own inbox)
GOAL_CHARS = 8_192  # a task's goal
REF_CHARS = 256  # a git ref a task starts from
MODEL_MESSAGES = 512  # messages in one model call
CONFIRM_CHARS = 64  # an infra operation's `confirm` (a stack's name)

_SOME_TEXT = r"\S"  # JSON Schema's pattern is a search: at least one non-blank character


def text(max_chars: int, *, blank: bool = False) -> msgspec.Meta:
    """The Meta of a text field: at most ``max_chars``; not blank unless ``blank``."""
    if blank:
        return msgspec.Meta(max_length=max_chars)
    return msgspec.Meta(min_length=1, max_length=max_chars, pattern=_SOME_TEXT)


Text = Annotated[str, text(TEXT_CHARS)]
OptionalText = Annotated[str, text(TEXT_CHARS, blank=True)]
Query = Annotated[str, text(QUERY_CHARS)]
Namespace = Annotated[str, text(NAMESPACE_CHARS)]
Ident = Annotated[str, text(ID_CHARS)]
SessionId = Annotated[str, text(SESSION_ID_CHARS)]
Model = Annotated[str, text(MODEL_CHARS)]
Path = Annotated[str, text(PATH_CHARS)]
K = Annotated[int, msgspec.Meta(ge=1, le=MAX_K)]
#: empty (none) or a subject; the endpoints that take one check it is an inbox
Subject = Annotated[str, msgspec.Meta(max_length=SUBJECT_CHARS)]


def table() -> list[tuple[str, str]]:
    """(what, limit) rows, as the README shows them."""
    return [
        ("nesting of objects and arrays in one message", f"{MAX_NESTING} levels"),
        ("headers room below NATS max_payload (edge body limit)", f"{HEADER_ROOM} bytes"),
        ("error text", f"{MAX_ERROR_TEXT} characters"),
        ("memory text, summary, prompt, response", f"{TEXT_CHARS} characters, not blank"),
        ("search query", f"{QUERY_CHARS} characters, not blank"),
        ("namespace", f"{NAMESPACE_CHARS} characters, not blank"),
        ("item id", f"{ID_CHARS} characters, not blank"),
        ("session id", f"{SESSION_ID_CHARS} characters, not blank"),
        ("model name", f"{MODEL_CHARS} characters, not blank"),
        ("index path", f"{PATH_CHARS} characters, components {PATH_PART_CHARS}, no NUL"),
        ("search filter tags", f"{TAGS}"),
        ("hits per search (k)", f"1 to {MAX_K}"),
        ("progress or stream subject (an inbox)", f"{SUBJECT_CHARS} characters"),
        ("task goal", f"{GOAL_CHARS} characters, not blank"),
        ("task base (a git ref)", f"{REF_CHARS} characters"),
        ("messages in one model call", f"1 to {MODEL_MESSAGES}"),
        ("model message content", f"{TEXT_CHARS} characters"),
        ("infra confirm", f"{CONFIRM_CHARS} characters"),
    ]
