"""The input checks no schema can state; each failure is a BadRequestError naming the field.

Requests reach the engine decoded by msgspec (``bus.codec``), which has already enforced every
limit their schemas declare (types, lengths, not blank, kinds, k, nesting). What is left is
here: sizes in bytes, how deep metadata may nest to come back in a search reply, secrets in
identifiers, and paths on the agent's machine. No description quotes the value it refuses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from bus.codec import check_nesting
from bus.errors import BadRequestError
from bus.limits import NAMESPACE_CHARS, PATH_CHARS, PATH_PART_CHARS
from memory.budget import HIT_METADATA_NESTING
from memory.redact import find_secret


def within_bytes(value: str, field: str, max_bytes: int) -> str:
    """``value`` when its UTF-8 form has at most ``max_bytes``."""
    if len(value) > max_bytes or len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise BadRequestError(f"{field}: longer than {max_bytes} bytes")
    return value


def identifiers(**fields: str | None) -> None:
    """Refuse an identifier (namespace, session id, model, scope) that holds a secret's shape.

    Identifiers are stored, keyed on and listed (``stats`` shows namespaces to any reader) as
    they are, so they cannot be redacted; a text field can (see :mod:`memory.redact`).
    Raises BadRequestError naming the first such field and what it looked like, not its value.
    """
    for field, value in fields.items():
        label = find_secret(value) if value else None
        if label is not None:
            raise BadRequestError(
                f"{field}: holds what looks like a secret ({label}); identifiers are stored "
                "and listed as they are, so choose one without it"
            )


def hit_metadata(value: dict[str, Any], field: str = "metadata") -> dict[str, Any]:
    """``value`` when a search reply can carry it (see :data:`HIT_METADATA_NESTING`)."""
    try:
        check_nesting(value, HIT_METADATA_NESTING)
    except msgspec.ValidationError:
        raise BadRequestError(
            f"{field}: nested deeper than {HIT_METADATA_NESTING} levels"
        ) from None
    return value


def directory(path: str) -> Path:
    """The directory ``path`` names on this machine, resolved.

    Raises BadRequestError naming ``path`` for a NUL, a component longer than
    PATH_PART_CHARS, a path longer than PATH_CHARS once resolved, or no such directory.
    """
    if "\0" in path:
        raise BadRequestError("path: must not contain a NUL character")
    if any(len(part) > PATH_PART_CHARS for part in path.split(os.sep)):
        raise BadRequestError(f"path: a component is longer than {PATH_PART_CHARS} characters")
    try:
        root = Path(path).expanduser().resolve()
        if len(str(root)) > PATH_CHARS:
            raise BadRequestError(f"path: longer than {PATH_CHARS} characters once resolved")
        if root.is_dir():
            return root
    except (OSError, ValueError, RuntimeError):
        pass  # too long for the OS, a loop of links, a user without a home: no directory
    raise BadRequestError("path: not a directory on the memory agent's machine")


def index_namespace(namespace: str, root: Path) -> str:
    """The namespace an index run writes: the one asked for, else the directory's name.

    Raises BadRequestError naming ``namespace`` when that is not one or holds a secret's shape.
    """
    name = namespace or root.name
    if not name.strip() or len(name) > NAMESPACE_CHARS:
        raise BadRequestError(
            f"namespace: the directory's name is not one; give a namespace of at most "
            f"{NAMESPACE_CHARS} characters"
        )
    if not namespace and find_secret(name) is not None:
        raise BadRequestError(
            "namespace: the directory's name holds what looks like a secret; give a namespace"
        )
    identifiers(namespace=name)
    return name
