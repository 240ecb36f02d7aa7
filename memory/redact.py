"""Secret redaction: the first thing every write goes through.

Guarantee: every secret shape in ``tests/data/secret_shapes.json`` is replaced and every
look-alike there is left as it is; a replaced span keeps its line breaks, so the lines after
it keep their numbers; redacting twice changes nothing more. Each replacement names what it
found: ``[REDACTED:aws-access-key]`` says what was there without saying what it was.

The evidence, in the order it is looked for:

- the shape alone: PEM private keys, with or without their BEGIN and END lines (a chunk that
  starts mid-key), provider key formats (AWS, GitHub, GitLab, Slack, Stripe, Google, OpenAI,
  Anthropic, Hugging Face, ...) wherever they sit, URL-encoded or glued to a word, and JWTs;
- a secret's name: ``NAME=value``, ``name: value``, ``"name": "value"``, ``--name value``,
  ``<name>value</name>`` anywhere in a line, plain or URL-encoded;
- a place: a URL's password, an ``Authorization`` header, ``curl -u user:pass``.

A value after a secret's name stays when it is plainly not one: a placeholder
(``your-api-key-here``, ``xxx``, ``<token>``, ``${TOKEN}``), an expression or a variable in
code (``os.environ["API_KEY"]``, ``api_key=api_key``, ``token: str``), or words with spaces.
Portkey keys have no fixed shape: they are found by their names (``PORTKEY_API_KEY``,
``x-portkey-api-key``, ``virtual_key``).

Identifiers cannot be redacted where they are keys: :func:`find_secret` says what one holds
(the engine refuses it), :func:`redact_identifier` redacts a file's path inside an indexed
repository (the same text :func:`redact` makes of it in metadata).

Speed: every pass reads the original text and records spans; the text is rewritten once.
Case-insensitive patterns run over one lower-cased copy (same positions), and each pattern
starts with a literal, so ``re`` searches for it instead of trying every offset; bounded
quantifiers and possessive loops keep hostile input linear (``bench/redaction.py``).
"""

from __future__ import annotations

import base64
import binascii
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any
from urllib.parse import unquote

Span = tuple[int, int]
Check = Callable[[re.Match[str], str], Span | None]  # (match, original text) -> span to replace
Pass = Callable[[str, str, "_Found"], None]  # (text, its folded copy, what was found so far)

#: the last word of a secret's name, lower case; ``key`` only after a qualifier
_WORD = (
    r"(?:pass(?:word|wd|phrase|code)?|pwd|secret|token|credentials?|key)"
    r"(?:[_.-]?(?:base|value|b64|base64|hex))?"
)
_WORD_AT_END = re.compile(_WORD + "$")
_KEY_QUALIFIER = re.compile(
    r"(?:api|access|secret|private|auth|signing|encryption|master|client|app|account|virtual|"
    r"webhook|service|session|license|deploy|consumer|admin)[_. -]?$"
)
_MODEL_TOKEN = re.compile(
    r"(?:^|[_.-])(?:bos|eos|pad|unk|sep|cls|mask|image|audio|video|special|start|end|begin|"
    r"stop|tool|think|placeholder|per|max|min|num)\d*[_.-]?$"
)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")

#: words that make up placeholders: "your-api-key-here", "fake_token", "changeme", "admin"
_VOCAB = frozenset(
    """a an the my your our this that here there is not no real fake dummy mock test tests
    testing example examples sample demo placeholder changeme changeit change me it replace
    insert put enter set todo tbd fixme secret secrets password passwd pass pwd passphrase
    token tokens key keys api access private public client app auth bearer basic value goes
    default dev development local localhost none null nil undefined empty redacted hidden
    masked foo bar baz qux string str bytes true false yes no on off sk pk id user username
    admin root db database service account aws github gh openai anthropic slack stripe google
    portkey env required optional repo org sha ref path host port name url uri""".split()
)
_PLACEHOLDER = re.compile(
    r"""(?ix)
    ^(?: \$\w | \{\{ | \{.*\}$ | <[^<>]*>$ | %\( | %[sdr]$ | \[REDACTED | (.)\1+$
       | [\[|<] \|? [\w -]* \|? [\]|>]$ )       # $VAR {{ t }} {x} <token> %(x)s xxxx [MASK]
    | ^\#(?: / | [0-9a-f]{3,8}$ )               # #/components/schemas/Key, #dcdccc
    | \{[\w.]*\} | <[\w -]+> | \$[({]          # pat/<token>, {name}s, $(cmd), ${VAR}
    | x{4,} | \*{3} | \.{3}                      # masks: xxxx, ***, ...
    | environ | getenv | process\.env           # where the secret lives, not the secret
    """
)
_PIECES = re.compile(r"[-_.\s:/\[\](){}<>'\"`*,;|]+")
_IDENTIFIER_PATH = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*")
_DEFAULTED = re.compile(r"[A-Za-z_][\w.]*=[^=]")
_QUERY_PATH = re.compile(r"[A-Za-z_]+(?:\.[A-Za-z_]+|\[-?\d+\])*\.[A-Za-z_]+")  # a.b[-1].c
_ENCODED_STOP = re.compile(r"(?i)%(?:0[ad]|2[0267c]|3[bce]|5d|7d)")
_REFERENCE = re.compile(r"[\w.$-]+")
_NAMES_A_SECRET = re.compile(r"(?i:token|secret|passw|cred|api_?key)|Key|_key|key_|KEY")
_NUMBER = re.compile(r"[-+]?[\d_]*\.?\d+(?:[eE][-+]?\d+)?")
#: a URL without a password (those have a pass of their own) or a file's path
_LOCATION = re.compile(
    r"[a-z][a-z0-9+.-]*://[^:@\s]*$|(?:~|\.{1,2})?/[^:\s]*\.[a-z]{2,5}$|/[a-z0-9_./{}-]*$"
)
_SYMBOLS = frozenset("!@#$%^&*+/=~|")


def _fold(text: str) -> str:
    """``text`` lower-cased, character for character (only U+0130 grows under lower())."""
    return text.replace("\u0130", "i").lower()


def _placeholder(value: str) -> bool:
    """Whether ``value`` is plainly not a secret: a template, a mask, placeholder words."""
    if "%" in value:
        value = unquote(value)  # a%20secret
    if _PLACEHOLDER.search(value) or not any(c.isalnum() for c in value):
        return True
    pieces = [p.removeprefix("my").removeprefix("your") for p in _PIECES.split(value.lower())]
    return all(p.rstrip("0123456789")[-20:] in _VOCAB for p in pieces if p)  # key1, mypassword


def _secret_value(value: str, *, quoted: bool, code: bool = True) -> bool:
    """Whether ``value``, found after a secret's name, looks like a secret; ``code``: a value
    that names a secret there (dep_token0) is a variable, not one (not so after Bearer)."""
    if len(value) < 4 or _placeholder(value) or any(c.isspace() for c in value):
        return False
    digit = any(c.isdigit() for c in value)
    path = value.removeprefix("~")  # ~azure.core.credentials.TokenProvider, in Sphinx
    if not quoted and _IDENTIFIER_PATH.fullmatch(path) and (not digit or "." in path):
        return False  # a variable, an attribute, a type: code, not a value
    if not quoted and _DEFAULTED.match(value):
        return False  # a type with a default: offendingToken:Token=None
    if code and _REFERENCE.fullmatch(value) and _NAMES_A_SECRET.search(value):
        if not quoted or value.islower() or value.isupper():
            return False  # dep_token0, Get-AzAccessToken, "m2m-client-credentials": names
    if _QUERY_PATH.fullmatch(value):
        return False  # a path into data (JMESPath, settings.SECRET_KEY), quoted or not
    if _NUMBER.fullmatch(value) or _LOCATION.match(value):
        return value.isdigit() and len(value) >= 6  # a PIN, not a port, price or path
    if digit or not _SYMBOLS.isdisjoint(value):
        return True
    # letters only: words (nextToken, LastEvaluatedBackupArn) unless long and random-cased:
    # in CamelCase the case changes about twice a word, in random letters every other one
    letters = [c for c in value if c.isalpha()]
    changes = sum(a.isupper() != b.isupper() for a, b in pairwise(letters))
    return len(letters) >= 16 and changes >= 0.4 * len(letters)


def _named(text: str, lower: str, word: int, start: int) -> bool:
    """Whether the name from ``start`` whose last word starts at ``word`` is a secret's:
    ``key`` needs a qualifier (api_key, AccountKey), and the short words pass and pwd must
    start a part of the name (db_pass, dbPass; not bypass, compass, PWD, OLDPWD)."""
    if "publi" in lower[start:word]:
        return False  # publicKeyToken, publishable_key: public by design
    if lower.startswith("key", word):
        return _KEY_QUALIFIER.search(lower, start, word) is not None
    if lower.startswith("token", word) and _MODEL_TOKEN.search(lower[start:word]):
        return False  # eos_token = "|END|": a tokenizer's marker
    if not lower.startswith(("pass", "pwd"), word) or lower.startswith("passw", word):
        return True
    if word == start:  # "first pass: ...", PWD: only a longer word is a name of its own
        return lower.startswith(("passphrase", "passcode"), word)
    before = text[word - 1]
    camel = before.islower() and text[word].isupper() and lower.startswith("pass", word)
    return not before.isalnum() or camel


def _name_start(text: str, word: int) -> int:
    i, floor = word, max(0, word - 64)
    while i > floor and text[i - 1] in _NAME_CHARS:
        i -= 1
    return i


def secret_name(name: str) -> bool:
    """Whether ``name`` (a dictionary key, a variable) names a secret: ``db_password``."""
    lower = _fold(name)
    found = _WORD_AT_END.search(lower)
    if found is None:
        return lower == "authorization"
    return _named(name, lower, found.start(), 0)


# -- one pass -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pass:
    """One pattern over the text: ``check`` says which span of a match to replace, if any."""

    label: str
    pattern: re.Pattern[str]
    check: Check
    gates: tuple[str, ...] = ()  # lower-case substrings, one of which any match holds
    folded: bool = False  # the pattern is lower case and runs over the folded text

    def __call__(self, text: str, lower: str, found: _Found) -> None:
        if self.gates and not any(g in lower for g in self.gates):
            return
        for match in self.pattern.finditer(lower if self.folded else text):
            span = self.check(match, text)
            if span is not None:
                found.add(span, self.label)


class _Found:
    """The spans to replace, disjoint and in order, each with the label of its first finder.

    Every pass reads the original text and adds here; the text is rewritten once, at the end
    (rewriting a large text after each pass would cost more than the passes). A span that
    overlaps others joins them, so a secret two passes find is replaced and counted once.
    """

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.labels: list[str] = []

    def add(self, span: Span, label: str) -> None:
        start, end = span
        if start >= end:
            return
        lo, hi = bisect_right(self.ends, start), bisect_left(self.starts, end)
        if lo < hi:  # overlaps spans lo .. hi-1: join them
            start, end = min(start, self.starts[lo]), max(end, self.ends[hi - 1])
            label = self.labels[lo]
        self.starts[lo:hi], self.ends[lo:hi], self.labels[lo:hi] = [start], [end], [label]

    def covers(self, position: int) -> bool:
        i = bisect_right(self.starts, position) - 1
        return i >= 0 and self.ends[i] > position

    def apply(self, text: str) -> str:
        """``text`` with every span replaced by its marker."""
        out, last = [], 0
        for start, end, label in zip(self.starts, self.ends, self.labels, strict=True):
            out += [text[last:start], _marker(label, text[start:end])]
            last = end
        return "".join([*out, text[last:]]) if out else text


def _marker(label: str, replaced: str) -> str:
    return f"[REDACTED:{label}]" + "\n" * replaced.count("\n")


def _text(match: re.Match[str], text: str, group: str) -> str:
    start, end = match.span(group)
    return text[start:end]


def _whole(match: re.Match[str], text: str) -> Span:
    return match.span()


def _value(group: str, *, quoted: bool = True, code: bool = True) -> Check:
    def check(match: re.Match[str], text: str) -> Span | None:
        ok = _secret_value(_text(match, text, group), quoted=quoted, code=code)
        return match.span(group) if ok else None

    return check


def _not_placeholder(match: re.Match[str], text: str) -> Span | None:
    return None if _placeholder(_text(match, text, "v")) else match.span("v")


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


def _pem_tails(text: str, lower: str, found: _Found) -> None:
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
    _Pass(
        "private-key",
        re.compile(rf"-----BEGIN {_PEM_KIND}-----{_PEM_BODY}-----END {_PEM_KIND}-----"),
        _whole,
        ("private key",),
    ),
    _Pass(
        "private-key",
        re.compile(rf"-----BEGIN {_PEM_KIND}-----(?P<body>{_PEM_BODY})"),
        _pem_open,
        ("private key",),
    ),
    _pem_tails,
    _Pass(
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
    _Pass(label, re.compile(pattern), _provider, gates) for label, pattern, gates in _PROVIDERS
]

# -- names and places (patterns in lower case, over the folded text) ------------------------

_SEPARATOR = r"(?P<sep>=>|:=|(?<![=!<>])=(?!=)|:(?![:/])|,|%(?:25)?3[da])"
_ASSIGNED = re.compile(
    rf"(?P<word>{_WORD})(?![\w.-])(?P<close>\\?[\"'`]|%22)?\]?[ \t]{{0,8}}{_SEPARATOR}"
    r"[ \t]{0,8}(?:\\?\"(?P<qd>[^\"\\\n]{1,512})|\\?'(?P<qs>[^'\\\n]{1,512})"
    r"|`(?P<qb>[^`\\\n]{1,512})|%22(?P<qp>[^\s\"'`\\&]{1,512})"
    r"|(?P<uv>[^\s\"'`\\,;&()\[\]{}<>|]{1,512}))"
)


def _assigned(match: re.Match[str], text: str) -> Span | None:
    """The value of ``name<sep>value`` when the name is a secret's and the value looks like
    one (see :func:`_secret_value`)."""
    word = match.start("word")
    name = _name_start(text, word)
    if not _named(text, match.string, word, name) or text[name - 1 : name] == ":":
        return None  # AWS::SecretsManager::Secret, arn:...:secret:db: a path, not a name
    group = match.lastgroup or "uv"
    start, end = match.span(group)
    value = text[start:end]
    if match.group("sep").startswith("%") or group == "qp":
        cut = _ENCODED_STOP.search(value)
        value = value[: cut.start()] if cut else value
    quoted = group != "uv"
    named = text[name : match.end("word")]  # ("GITHUB_TOKEN", "v"), ("X-Api-Key", "v")
    env_like = named.isupper() or (named[:1].isupper() and not named.isalpha())
    pair = quoted and match.group("close") and env_like
    if match.group("sep") == "," and not pair:
        return None  # a list of words ("secret", "Ed25519"), not ("GITHUB_TOKEN", "value")
    if not quoted and text[end : end + 1] in ("(", "[", "}"):
        return None  # a call, a subscript, a format spec: os.environ["API_KEY"], {t:056d}
    if not quoted and match.group("sep") == ":" and _DESCRIBED.match(text, end):
        if len(value) < 10 or value.isalpha() or value.isdigit() or _WORDY.search(value):
            return None  # a docstring: "client_secret: OAuth2 client secret (...)"
    return (start, start + len(value)) if _secret_value(value, quoted=quoted) else None


_WORDY = re.compile(r"-[a-z]{3,}\b")  # Base64-encoded, read-only
_DESCRIBED = re.compile(r"[ \t]+[A-Za-z]{2,}")
_ENV_LINE = re.compile(r"(?m)^[ \t]*(?:export[ \t]+)?(?P<name>[A-Z][A-Z0-9_]{0,80})=(?P<v>.*)")
_ENV_COMMENT = re.compile(r"[ \t]+#")
_EXPRESSION = re.compile(r"[\w.]*[(\[]|`")


def _env_line(match: re.Match[str], text: str) -> Span | None:
    """The value of a ``.env`` line ``NAME=value`` (all of it: it may hold spaces)."""
    if not secret_name(match.group("name")):
        return None
    raw, start = match.group("v").rstrip("\r"), match.start("v")
    if raw[:1] in ("'", '"'):
        close = raw.find(raw[0], 1)
        value, start = raw[1 : close if close > 0 else None], start + 1
    else:
        value = _ENV_COMMENT.split(raw, maxsplit=1)[0].rstrip()
    if len(value) < 4 or _placeholder(value) or _EXPRESSION.match(value):
        return None
    indented = text[match.start()] in " \t"
    if _IDENTIFIER_PATH.fullmatch(value.rstrip(",")) and ("." in value or indented):
        return None  # settings.SECRET_KEY, or a keyword argument: f(\n  API_KEY=api_key,
    return start, start + len(value)


def _word_value(match: re.Match[str], text: str) -> Span | None:
    """A value after a secret's name that stands as a word of its own (prose, flags, XML)."""
    word = match.start("word")
    if not _named(text, match.string, word, _name_start(text, word)):
        return None
    group = match.lastgroup or "v"
    return _value(group, quoted=group != "uv")(match, text)


def _prose_value(match: re.Match[str], text: str) -> Span | None:
    """The word after "password is": a secret only if it could not be code or a word."""
    value = _text(match, text, "v")
    if any(c in "[](){}" for c in value) or not _secret_value(value, quoted=False):
        return None
    return _word_value(match, text)


def _edge_value(match: re.Match[str], text: str) -> Span | None:
    """``v`` when the match starts a name (not EndpointAuthorization, not a type path
    AWS::Config::AggregationAuthorization) and ``v`` looks like a secret, not a variable."""
    start, end = match.start(), match.end("v")
    if start and (text[start - 1].isalnum() or text[start - 2 : start] == "::"):
        return None
    value = text[match.start("v") : end]
    if value.endswith("=") and _IDENTIFIER_PATH.fullmatch(value.rstrip("=")):
        return None  # an auth-param: Bearer resource_metadata="..."
    return _value("v", quoted=False, code=False)(match, text)


def _basic(match: re.Match[str], text: str) -> Span | None:
    """``Basic <base64 of user:password>``; "basic authentication" is a phrase."""
    token = _text(match, text, "v")
    try:
        plain = base64.b64decode(token + "=" * (-len(token) % 4), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return match.span("v") if ":" in plain and plain.isprintable() else None


def _folded(label: str, pattern: str, check: Check, *gates: str) -> _Pass:
    return _Pass(label, re.compile(pattern), check, gates, folded=True)


_NAME_PASSES: list[Pass] = [
    _Pass("env-secret", _ENV_LINE, _env_line),
    _Pass("assigned-secret", _ASSIGNED, _assigned, folded=True),
    _folded(
        "assigned-secret",
        r"(?P<word>pass(?:word|phrase)|passwd|token|secret|api[ _-]?key)[ \t]+(?:is|was)"
        r"[ \t]+[\"'`]?(?P<v>[^\s\"'`,;<>]{6,128}?)\.?(?=[\s\"'`,;]|$)",
        _prose_value,
        " is ",
        " was ",
    ),
    _Pass(
        "url-password",
        re.compile(r"://(?P<user>[^\s:/@'\"<>]{0,128}):(?P<v>[^\s@/'\"<>]{1,256})@"),
        _not_placeholder,
        ("://",),
    ),
    _folded(
        "url-password",
        r"%3a%2f%2f[^\s%:/@&]{0,128}%3a(?P<v>[^\s&@/]{1,256}?)%40",
        _not_placeholder,
        "%3a%2f%2f",
    ),
    _folded("bearer-token", r"bearer[ \t]+(?P<v>[\w.~+/-]{16,}+=*+)", _edge_value, "bearer"),
    _folded(
        "basic-auth", r"basic[ \t]+(?P<v>[a-z0-9+/]{6,}={0,2})(?![a-z0-9+/=])", _basic, "basic"
    ),
    _folded(
        "authorization",
        r"authorization\\?[\"']?[ \t]*[:=][ \t]*\\?[\"']?"
        r"(?:(?:bearer|basic|token|apikey|api-key|key|sso-key|digest|hmac|aws4-hmac-sha256)"
        r"[ \t]+)?(?P<v>[^\s\"'`\\,;()\[\]{}]{8,512})",
        _edge_value,
        "authorization",
    ),
    _Pass(
        "url-password",
        re.compile(r"-(?<![\w-]-)(?:u|-user)[ \t]+[\"']?[^\s:\"']{1,128}:(?P<v>[^\s\"']{1,256})"),
        _not_placeholder,
        ("-u ", "--user"),
    ),
    _folded(
        "assigned-secret",
        rf"-(?<![\w-]-)-?[a-z0-9-]{{0,40}}?(?P<word>{_WORD})[ \t]+"
        r"(?:\"(?P<qd>[^\"\n]{4,256})\"|'(?P<qs>[^'\n]{4,256})'|(?P<uv>[^\s\"'-][^\s\"']{3,255}))",
        _word_value,
        "-",
    ),
    _folded(
        "assigned-secret",
        rf"<[\w.:-]{{0,40}}?(?P<word>{_WORD})>(?P<v>[^<\n]{{1,512}})</",
        _word_value,
        "</",
    ),
]

_PASSES: list[Pass] = [*_PEM_PASSES, *_PROVIDER_PASSES, *_NAME_PASSES]


def _scan(text: str) -> tuple[str, list[str]]:
    found = _Found()
    lower = _fold(text)
    for run in _PASSES:
        run(text, lower, found)
    return found.apply(text), found.labels


def redact(text: str) -> tuple[str, int]:
    """Return ``text`` with every secret found replaced, and how many were replaced."""
    clean, found = _scan(text)
    return clean, len(found)


def find_secret(value: str) -> str | None:
    """The label of the first secret in ``value`` (an identifier), or None."""
    found = _scan(value)[1]
    return found[0] if found else None


def redact_identifier(value: str) -> str:
    """``value`` (a path, a file name) with its secrets replaced; unchanged without any."""
    return _scan(value)[0]


def redact_value(value: Any) -> tuple[Any, int]:
    """Redact every string inside a JSON-like value, recursively: dictionary keys too, and
    the whole of a string stored under a secret's name (``{"db_password": "hunter2!"}``)."""
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
        return _redact_dict(value)
    return value, 0


def _redact_dict(value: dict[Any, Any]) -> tuple[dict[Any, Any], int]:
    result: dict[Any, Any] = {}
    total = 0
    for key, item in value.items():
        clean_key, n_key = redact(key) if isinstance(key, str) else (key, 0)
        if isinstance(item, str) and isinstance(key, str) and secret_name(key):
            clean, n = redact(item)
            if n == 0 and _secret_value(item.strip(), quoted=True):
                clean, n = _marker("assigned-secret", item), 1
        else:
            clean, n = redact_value(item)
        while clean_key in result:  # two keys redacted alike: keep both
            clean_key = f"{clean_key}'"
        result[clean_key] = clean
        total += n + n_key
    return result, total
