"""Secret redaction: the first thing every write goes through.

Each pattern names what it found, so ``[REDACTED:aws-access-key]`` says what was there
without saying what it was. Patterns aim at shapes of real credentials and at values
assigned to secret-looking names; code that merely mentions ``token`` is left alone.
"""

from __future__ import annotations

import re
from typing import Any

_SECRET_NAME = (
    r"[A-Za-z0-9_.-]*(?:SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|API_?KEY|ACCESS_?KEY|"
    r"PRIVATE_?KEY|CREDENTIALS?|AUTH_?KEY|CLIENT_?SECRET|DSN)[A-Za-z0-9_.-]*"
)

# (label, pattern, group to replace: 0 for the whole match)
_PATTERNS: list[tuple[str, re.Pattern[str], int]] = [
    (
        "private-key",
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----.*?"
            r"(?:-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|\Z)",
            re.S,
        ),
        0,
    ),
    (
        "aws-access-key",
        re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b"),
        0,
    ),
    ("github-token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_\w{22,255})"), 0),
    ("gitlab-token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"), 0),
    ("slack-token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), 0),
    ("api-key", re.compile(r"\bsk-(?:ant-|proj-|live-)?[A-Za-z0-9_-]{20,}"), 0),
    ("stripe-key", re.compile(r"\b[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}"), 0),
    ("google-api-key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), 0),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), 0),
    ("bearer-token", re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/-]{16,}=*)"), 1),
    ("url-password", re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]+:([^\s@/]+)@"), 1),
    (
        "env-secret",
        re.compile(
            rf"(?m)^[ \t]*(?:export[ \t]+)?{_SECRET_NAME}[ \t]*[=:][ \t]*"
            r"(?![\"']?\[REDACTED)(\"[^\"\n]*\"|'[^'\n]*'|[^\s#'\"][^\n#]*)",
        ),
        1,
    ),
    (
        "assigned-secret",
        re.compile(
            rf"(?i)\b{_SECRET_NAME}\b[\"']?[ \t]*(?:=|:|=>)[ \t]*"
            r"(?![\"']?\[REDACTED)(\"[^\"\n]{6,}\"|'[^'\n]{6,}')",
        ),
        1,
    ),
]


def redact(text: str) -> tuple[str, int]:
    """Return ``text`` with every secret found replaced, and how many were replaced."""
    total = 0
    for label, pattern, group in _PATTERNS:
        marker = f"[REDACTED:{label}]"

        def replace(match: re.Match[str], group: int = group, marker: str = marker) -> str:
            if group == 0:
                return marker
            start, end = match.span(group)
            base = match.start()
            whole = match.group(0)
            return whole[: start - base] + marker + whole[end - base :]

        text, n = pattern.subn(replace, text)
        total += n
    return text, total


def redact_value(value: Any) -> tuple[Any, int]:
    """Redact every string inside a JSON-like value (dict keys included), recursively."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        out, total = [], 0
        for item in value:
            clean, n = redact_value(item)
            out.append(clean)
            total += n
        return out, total
    if isinstance(value, dict):
        result: dict[Any, Any] = {}
        total = 0
        for key, item in value.items():
            clean_key, n_key = redact_value(key) if isinstance(key, str) else (key, 0)
            clean, n = redact_value(item)
            result[clean_key] = clean
            total += n + n_key
        return result, total
    return value, 0
