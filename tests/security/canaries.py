"""Canary secrets in the shapes the redactor must catch, and how to look for them.

A :class:`Canary` is one fresh secret (new values every run, so nothing left from an earlier
run can match) with the *fragments* a leak check looks for: the whole value and overlapping
windows of its distinctive part (the part after a well-known prefix such as ``AKIA`` or
``ghp_``; for a private key, of every body line). A window is :data:`WINDOW` characters long
and one starts every :data:`STRIDE` characters, so any piece of the value that survived a
partial redaction and is at least ``WINDOW + STRIDE - 1`` characters long contains a whole
window. Matching ignores case: a keyword index stores its terms lower-cased.

:func:`leaks` answers which canaries a text or a file's bytes hold; :class:`Findings`
collects them per sink, so a failure names the sink and the canary.
"""

from __future__ import annotations

import base64
import secrets
import string
from collections import defaultdict
from dataclasses import dataclass, field

WINDOW = 12
STRIDE = 6
_UPPER_DIGITS = string.ascii_uppercase + string.digits
_ALNUM = string.ascii_letters + string.digits
_AWS_ID = string.ascii_uppercase + "234567"  # AWS key ids are base32


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _mixed(alphabet: str, n: int) -> str:
    """A random string with at least one upper-case letter, lower-case letter and digit."""
    while True:
        value = _random(alphabet, n)
        if any(c.isupper() for c in value) and any(c.isdigit() for c in value):
            if alphabet != _ALNUM or any(c.islower() for c in value):
                return value


def _windows(part: str) -> list[str]:
    if len(part) <= WINDOW:
        return [part]
    starts = range(0, len(part) - WINDOW + 1, STRIDE)
    tail = [part[-WINDOW:]]  # the last window, whatever the stride left over
    return [part[i : i + WINDOW] for i in starts] + tail


@dataclass(frozen=True)
class Canary:
    """One planted secret: ``name`` says what it is, ``fragments`` what gives it away."""

    name: str
    value: str
    distinctive: tuple[str, ...]  # the parts windows are cut from

    @property
    def fragments(self) -> tuple[str, ...]:
        parts = [self.value] + [w for part in self.distinctive for w in _windows(part)]
        return tuple(dict.fromkeys(p.lower() for p in parts))


def _pem_body(lines: int) -> list[str]:
    raw = secrets.token_bytes(48 * lines - 2)
    text = base64.b64encode(raw).decode()
    return [text[i : i + 64] for i in range(0, len(text), 64)]


@dataclass(frozen=True)
class CanarySet:
    """The canaries of one run."""

    aws_key_id: Canary
    aws_secret: Canary
    github_token: Canary
    private_key: Canary
    portkey_key: Canary

    @classmethod
    def fresh(cls) -> CanarySet:
        key_id = "AKIA" + _mixed(_AWS_ID, 16)
        aws_secret = _mixed(_ALNUM, 40)
        github = "ghp_" + _mixed(_ALNUM, 36)
        body = _pem_body(8)
        pem = "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *body, "-----END RSA PRIVATE KEY-----"])
        portkey = _mixed(_ALNUM, 32)
        return cls(
            aws_key_id=Canary("aws-access-key-id", key_id, (key_id[4:],)),
            aws_secret=Canary("aws-secret-access-key", aws_secret, (aws_secret,)),
            github_token=Canary("github-token", github, (github[4:],)),
            private_key=Canary("private-key-pem", pem, tuple(body)),
            portkey_key=Canary("portkey-api-key", portkey, (portkey,)),
        )

    @property
    def all(self) -> tuple[Canary, ...]:
        return (
            self.aws_key_id,
            self.aws_secret,
            self.github_token,
            self.private_key,
            self.portkey_key,
        )

    def text(self, marker: str) -> str:
        """Every canary as people write them down, with ``marker`` (no secret) beside them."""
        return (
            f"Deploy notes {marker}.\n"
            f"export AWS_ACCESS_KEY_ID={self.aws_key_id.value}\n"
            f"export AWS_SECRET_ACCESS_KEY={self.aws_secret.value}\n"
            f'GITHUB_TOKEN="{self.github_token.value}"\n'
            f"PORTKEY_API_KEY={self.portkey_key.value}\n"
            f"{self.private_key.value}\n"
            f"The retry policy keeps three attempts ({marker}).\n"
        )

    def line(self, marker: str) -> str:
        """The canaries that fit on one line, mid-sentence."""
        return (
            f"use key {self.aws_key_id.value} with aws_secret_access_key="
            f"{self.aws_secret.value}, token {self.github_token.value} and "
            f"x-portkey-api-key: {self.portkey_key.value} for {marker}"
        )


def leaks(haystack: str | bytes, canaries: tuple[Canary, ...]) -> list[str]:
    """The names of the canaries of which ``haystack`` holds a fragment (case ignored)."""
    folded = haystack.lower()
    found = []
    for canary in canaries:
        frags = canary.fragments
        hit = (
            any(f.encode() in folded for f in frags)
            if isinstance(folded, bytes)
            else any(f in folded for f in frags)
        )
        if hit:
            found.append(canary.name)
    return found


@dataclass
class Findings:
    """Which sink held which canary; ``seen`` counts what was looked at, per kind of sink."""

    canaries: tuple[Canary, ...]
    held: dict[str, list[str]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def check(self, kind: str, sink: str, haystack: str | bytes) -> None:
        self.seen[kind] += 1
        names = leaks(haystack, self.canaries)
        if names:
            self.held[f"{kind}: {sink}"] = names

    def report(self) -> str:
        lines = [f"{sink} held {', '.join(names)}" for sink, names in sorted(self.held.items())]
        return "secrets leaked:\n  " + "\n  ".join(lines)
