"""Who is calling and what they may reach: principals, scopes and tool allow-lists.

Scopes: ``*`` (everything), ``<service>`` or ``<service>:*`` (every endpoint of a service),
``<service>:<endpoint>`` (one endpoint), ``<service>:read`` (the endpoints whose metadata says
``access: read``). Tool patterns are shell-style (``memory_*``) over namespaced tool names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache

_SCOPE = re.compile(r"^(\*|[A-Za-z0-9_-]+(:(\*|[A-Za-z0-9_-]+))?)$")
_PATTERN = re.compile(r"^[A-Za-z0-9_.*?\[\]-]{1,128}$")


def check_scope(scope: str) -> str:
    """Return ``scope`` when it is well formed. Raises ValueError saying what is allowed."""
    if not _SCOPE.match(scope):
        raise ValueError(f"scope {scope!r}: must be '*', SERVICE, SERVICE:* or SERVICE:ENDPOINT")
    return scope


def check_pattern(pattern: str) -> str:
    """Return ``pattern`` when it is a usable tool-name pattern. Raises ValueError."""
    if not _PATTERN.match(pattern):
        raise ValueError(f"tool pattern {pattern!r}: letters, digits, '_', '-', '.', '*', '?'")
    return pattern


def matches_any(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Whether ``name`` fits one of ``patterns`` (no patterns: everything fits)."""
    return not patterns or _matches(name, tuple(patterns))


@lru_cache(maxsize=4096)  # every call checks its tool against up to three lists
def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller: a token's name, scopes and tool allow-list, or the local stdio user."""

    name: str
    scopes: tuple[str, ...] = ("*",)
    tools: tuple[str, ...] = ()

    def may_call(self, service: str, endpoint: str, access: str = "") -> bool:
        """Whether the scopes reach ``service``/``endpoint`` (``access``: its declared class)."""
        for scope in self.scopes:
            if scope == "*" or scope == service or scope == f"{service}:*":
                return True
            svc, _, what = scope.partition(":")
            if svc == service and (what == endpoint or (access and what == access)):
                return True
        return False

    def lists(self, tool_name: str) -> bool:
        """Whether the principal's own allow-list keeps ``tool_name``."""
        return matches_any(tool_name, self.tools)


LOCAL = Principal(name="local")
