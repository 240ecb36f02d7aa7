"""Who is calling and what they may reach: principals, scopes and tool allow-lists.

Scopes: ``*`` (everything), ``<service>`` or ``<service>:*`` (every endpoint of a service),
``<service>:<endpoint>`` (one endpoint), ``<service>:read`` (the endpoints whose metadata says
``access: read``). Tool patterns are shell-style (``memory_*``) over namespaced tool names.
A :class:`Principal` is what Starlette's authentication puts in ``scope["user"]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache

from starlette.authentication import BaseUser

from bus.subjects import is_token

_PATTERN = re.compile(r"[A-Za-z0-9_.*?\[\]-]{1,128}")


def check_scope(scope: str) -> str:
    """Return ``scope`` when it is well formed. Raises ValueError saying what is allowed."""
    service, sep, what = scope.partition(":")
    if scope != "*" and not (is_token(service) and (not sep or what == "*" or is_token(what))):
        raise ValueError("scope: must be '*', SERVICE, SERVICE:*, SERVICE:read or SERVICE:ENDPOINT")
    return scope


def check_pattern(pattern: str) -> str:
    """Return ``pattern`` when it is a usable tool-name pattern. Raises ValueError."""
    if not _PATTERN.fullmatch(pattern):
        raise ValueError("tool pattern: letters, digits, '_', '-', '.', '*', '?', '[', ']'")
    return pattern


def matches_any(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Whether ``name`` fits one of ``patterns`` (no patterns: everything fits)."""
    return not patterns or _matches(name, tuple(patterns))


@lru_cache(maxsize=4096)  # every call checks its tool against up to three lists
def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True, slots=True)
class Principal(BaseUser):
    """A caller: a token's name, scopes and tool allow-list, or the local stdio user."""

    name: str
    scopes: tuple[str, ...] = ("*",)
    tools: tuple[str, ...] = ()

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.name

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
