"""Secrets known by their shape alone, and what a pass over the text is.

Guarantee: a pass reads the original text and only records the spans to replace (in a
:class:`Found`); it never rewrites the text, which :mod:`memory.redact` does once, after every
pass has run. The shapes found here are PEM private keys, with or without their BEGIN and END
lines (a chunk that starts mid-key), and provider key formats (AWS, GitHub, GitLab, Slack,
Stripe, Google, OpenAI, Anthropic, Hugging Face, ...) wherever they sit, URL-encoded or glued
to a word, and JWTs. A documentation key (``AKIAIOSFODNN7EXAMPLE``, ``sk-proj-xxxxxxxx``) is
left alone, and so are the base64 lines of a certificate or a public key.

Each pattern starts with a literal, so ``re`` searches for it instead of trying every offset;
bounded quantifiers and possessive loops keep hostile input linear (``bench/redaction.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

Span = tuple[int, int]


class Found(Protocol):
    """Where passes record what they find: spans to replace, each with a label."""

    def add(self, span: Span, label: str) -> None: ...

    def covers(self, position: int) -> bool: ...


Check = Callable[[re.Match[str], str], Span | None]  # (match, original text) -> span to replace
Pass = Callable[[str, str, Found], None]  # (text, its folded copy, what was found so far)


@dataclass(frozen=True, slots=True)
class PatternPass:
    """One pattern over the text: ``check`` says which span of a match to replace, if any."""

    label: str
    pattern: re.Pattern[str]
    check: Check
    gates: tuple[str, ...] = ()  # lower-case substrings, one of which any match holds
    folded: bool = False  # the pattern is lower case and runs over the folded text

    def __call__(self, text: str, lower: str, found: Found) -> None:
        if self.gates and not any(g in lower for g in self.gates):
            return
        for match in self.pattern.finditer(lower if self.folded else text):
            span = self.check(match, text)
            if span is not None:
                found.add(span, self.label)


def _whole(match: re.Match[str], text: str) -> Span:
    return match.span()


# -- private keys ---------------------------------------------------------------------------

_PEM_KIND = r"[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?"
_PEM_HEADER = r"(?:Proc-Type|DEK-Info|Version|Comment|Hash|Charset):[^\n\\]{0,200}+"
_PEM_BODY = rf"(?:{_PEM_HEADER}|[A-Za-z0-9+/=\s\"',;]|\\[nr])*+"
_B64_RUN = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}(?:(?:\s|\\[nr]|[\"',+])*[A-Za-z0-9+/]{1,39}=)?")
_KEY_LINE = re.compile(r"[A-Za-z0-9+/]{1,100}={0,2}")
_PEM_END = re.compile(rf"-----END {_PEM_KIND}-----")


def _pem_open(match: re.Match[str], text: str) -> Span | None:
    """A BEGIN line without its END: the key lines that follow it, if any."""
    runs = list(_B64_RUN.finditer(match.group("body")))
    if not runs:
        return None  # a program that only names the header
    return match.start(), match.start("body") + runs[-1].end()


def _mixed(line: str) -> bool:
    upper = lower = digit = False
    for c in line:
        upper, lower, digit = upper or c.isupper(), lower or c.islower(), digit or c.isdigit()
    return upper and lower and digit


def _key_lines(match: re.Match[str], text: str) -> Span | None:
    """Lines of a key body (64 or 70 characters of base64), unless a public block's."""
    if match.group("public") is not None:
        return None
    kind = match.group("kind")
    if kind is not None and "PRIVATE" not in kind:
        return None  # the tail of a certificate
    return match.span() if all(_mixed(line) for line in match.group("lines").split()) else None


def _pem_tails(text: str, lower: str, found: Found) -> None:
    """Key lines just above an END line that lost its BEGIN (a chunk starting mid-key)."""
    if "-----end" not in lower or "private key" not in lower:
        return
    for end in _PEM_END.finditer(text):
        start = line = text.rfind("\n", 0, end.start()) + 1
        if found.covers(end.start()) or text[line : end.start()].strip():
            continue  # a whole block, or an END line with more on it: not a key file's
        for _ in range(200):
            previous = text.rfind("\n", 0, start - 1) + 1
            if start == 0 or not _KEY_LINE.fullmatch(text[previous : start - 1].strip()):
                break
            start = previous
        if start < line:
            found.add((start, end.end()), "private-key")


_PEM_PASSES: list[Pass] = [
    PatternPass(
        "private-key",
        re.compile(rf"-----BEGIN {_PEM_KIND}-----{_PEM_BODY}-----END {_PEM_KIND}-----"),
        _whole,
        ("private key",),
    ),
    PatternPass(
        "private-key",
        re.compile(rf"-----BEGIN {_PEM_KIND}-----(?P<body>{_PEM_BODY})"),
        _pem_open,
        ("private key",),
    ),
    _pem_tails,
    PatternPass(
        "private-key",
        re.compile(
            r"(?m)^(?:(?P<public>-----BEGIN (?![A-Z ]*PRIVATE)[A-Z0-9 ]{1,40}-----"
            rf"{_PEM_BODY}-----END [A-Z0-9 ]{{1,40}}-----)"
            r"|(?P<lines>(?:[ \t]*[A-Za-z0-9+/]{64}(?:[A-Za-z0-9+/]{6})?[ \t]*(?:\r?\n|\Z)){2,})"
            r"(?:[ \t]*[A-Za-z0-9+/]{1,69}={0,2}[ \t]*(?:\r?\n|\Z))?"
            r"(?:[ \t]*-----END (?P<kind>[A-Z0-9 ]{1,40})-----)?)"
        ),
        _key_lines,
    ),
]

# -- provider formats -----------------------------------------------------------------------


def _edged(literal: str, width: int, rest: str) -> str:
    """``literal`` (``width`` characters) then ``rest``, not glued to a letter or digit
    before it unless by a percent-escape (``%3Dghp_...``); the check comes after the
    literal so that ``re`` can search for the literal."""
    before = rf"(?:(?<![A-Za-z0-9].{{{width}}})|(?<=%[0-9A-Fa-f]{{2}}.{{{width}}}))"
    return literal + before + rest


#: (label, pattern, gates). Distinctive prefixes match glued to anything (k_AKIA...,
#: Credential%3DAKIA..., ANTHROPICsk-ant-...); short ones only at a word's edge.
_PROVIDERS = [
    (
        "aws-access-key",
        r"A(?:3T[A-Z0-9]|KIA|SIA|BIA|CCA|GPA|IDA|IPA|NPA|NVA|ROA|PKA)[A-Z0-9]{16}(?![A-Z0-9])",
        (),
    ),
    ("github-token", r"gh[pousr]_[A-Za-z0-9]{36,255}", ("gh",)),
    ("github-token", r"github_pat_\w{22,255}", ("github_pat_",)),
    ("gitlab-token", r"gl(?:pat|dt|rt|ptt|soat|cbt|ft|imt|oas|agent)-[\w-]{20,}", ("gl",)),
    ("slack-token", r"x(?:ox[abposre]|app)-[A-Za-z0-9-]{10,}", ("xox", "xapp-")),
    (
        "slack-webhook",
        r"hooks\.slack\.com/(?:services|workflows|triggers)/[\w+/-]{20,}",
        ("hooks.slack",),
    ),
    ("anthropic-key", r"sk-ant-[\w-]{20,}", ("sk-ant-",)),
    ("openai-key", r"sk-(?:proj|svcacct|admin)-[\w-]{20,}", ("sk-",)),
    ("api-key", _edged("sk-", 3, r"[A-Za-z0-9]{32,}(?![\w-])"), ("sk-",)),
    ("stripe-key", r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}", ("k_live_", "k_test_")),
    ("stripe-key", r"whsec_[A-Za-z0-9]{24,}", ("whsec_",)),
    ("google-api-key", r"AIza[\w-]{35}(?![\w-])", ("aiza",)),
    ("google-oauth", r"GOCSPX-[\w-]{28}|ya29\.[\w-]{20,}", ("gocspx-", "ya29.")),
    ("jwt", r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]*", ("eyj",)),
    ("huggingface-token", _edged("hf_", 3, r"[A-Za-z0-9]{34,}"), ("hf_",)),
    ("npm-token", _edged("npm_", 4, r"[A-Za-z0-9]{36}(?![A-Za-z0-9])"), ("npm_",)),
    ("pypi-token", r"pypi-AgEIcHlwaS5vcmc[\w-]{50,}", ("pypi-ageichlwas5vcmc",)),
    ("sendgrid-key", _edged(r"SG\.", 3, r"[\w-]{22}\.[\w-]{43}"), ("sg.",)),
    ("digitalocean-token", r"do[opr]_v1_[a-f0-9]{64}", ("_v1_",)),
    ("shopify-token", r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}", ("shp",)),
    ("age-secret-key", r"AGE-SECRET-KEY-1[0-9A-Z]{58}", ("age-secret-key-1",)),
    ("databricks-token", _edged("dapi", 4, r"[0-9a-f]{32}"), ("dapi",)),
    ("discord-webhook", r"discord(?:app)?\.com/api/webhooks/\d{5,30}/[\w-]{30,}", ("discord",)),
    ("docker-token", r"dckr_pat_[\w-]{27,}", ("dckr_pat_",)),
]


_MASKED = re.compile(r"(?i)x{8,}|\*{3}|\.{3}|^(.)\1+$")


def _provider(match: re.Match[str], text: str) -> Span | None:
    value = match.group(0)
    if _MASKED.search(value[4:]) or value.endswith("EXAMPLE"):
        return None  # AKIAXXXXXXXXXXXXXXXX, AKIAIOSFODNN7EXAMPLE, sk-proj-xxxxxxxx: documentation
    if value.startswith("sk-") and (value[3:].isalpha() or value[3:].isdigit()):
        return None  # a generic sk- key is random: letters and digits
    return match.span()


_PROVIDER_PASSES: list[Pass] = [
    PatternPass(label, re.compile(pattern), _provider, gates)
    for label, pattern, gates in _PROVIDERS
]

#: every pass by shape, in the order they run (the whole PEM block before its tails)
SHAPE_PASSES: list[Pass] = [*_PEM_PASSES, *_PROVIDER_PASSES]
