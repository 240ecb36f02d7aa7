"""Secrets this process was given: the values of its secret-named environment variables, found
wherever they appear, bare, with no name or known shape beside them.

Guarantee: the value of an environment variable whose name is a secret's
(:func:`~memory.secret_values.secret_name`: ``PORTKEY_API_KEY``, ``PULUMI_ACCESS_TOKEN``,
``AWS_SECRET_ACCESS_KEY``) is replaced wherever it occurs, as it is or URL-encoded, when it is
at least :data:`MIN_CHARS` characters long and a secret value by
:func:`~memory.secret_values.secret_value` (no spaces, not a placeholder). A shorter value
(``POSTGRES_PASSWORD=postgres``) would replace ordinary words, so it is left to the name and
shape passes.

The environment is read once, when the first text is redacted (a process's secrets come with
it when it starts; reading ``os.environ`` costs about 50 µs, more than a short text's whole
redaction), and again on :func:`refresh_environment`.
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote

from memory.secret_shapes import Found
from memory.secret_values import secret_name, secret_value

#: the shortest value found bare: shorter ones are too often ordinary words
MIN_CHARS = 16
LABEL = "environment-secret"


def environment_secrets() -> frozenset[str]:
    """The values of the environment that this pass replaces, as it is now."""
    return frozenset(
        value
        for name, value in os.environ.items()
        if len(value) >= MIN_CHARS
        and secret_name(name)
        and secret_value(value, quoted=True, code=False)
    )


def _pattern(values: frozenset[str]) -> re.Pattern[str] | None:
    forms = {form for value in values for form in (value, quote(value, safe=""))}
    if not forms:
        return None
    longest_first = sorted(forms, key=len, reverse=True)
    return re.compile("|".join(re.escape(form) for form in longest_first))


class _Snapshot:
    """The pattern of the environment's secret values, read on first use."""

    read = False
    pattern: re.Pattern[str] | None = None


def refresh_environment() -> None:
    """Read the environment again (after a change to it in this process)."""
    _Snapshot.pattern, _Snapshot.read = _pattern(environment_secrets()), True


def environment_pass(text: str, lower: str, found: Found) -> None:
    """Records every occurrence of a secret value of the environment in ``text``."""
    if not _Snapshot.read:
        refresh_environment()
    pattern = _Snapshot.pattern
    if pattern is None:
        return
    for match in pattern.finditer(text):
        found.add(match.span(), LABEL)
