"""Secrets known by a name or a place: which names are a secret's, which values are secrets.

Guarantee: a value is replaced only when a secret's name or place comes before it and the
value does not plainly say it is not a secret. A name is a secret's when its last word is one
(``password``, ``secret``, ``token``, ``credentials``; ``key`` only after a qualifier:
``api_key``, ``AccountKey``), unless it is public by design (``publicKeyToken``) or a
tokenizer's marker (``eos_token``). It is found as ``NAME=value``, ``name: value``,
``"name": "value"``, ``--name value``, ``<name>value</name>`` and in ``.env`` lines, plain or
URL-encoded. A place is a URL's password, an ``Authorization`` header, ``Bearer`` and
``Basic`` credentials, ``curl -u user:pass``. The value stays when it is a placeholder
(``your-api-key-here``, ``xxx``, ``<token>``, ``${TOKEN}``), an expression or a variable in
code (``os.environ["API_KEY"]``, ``api_key=api_key``, ``token: str``), or words with spaces.

Patterns written in lower case run over the folded text (:func:`fold`), whose positions are
the original's.
"""

from __future__ import annotations

import base64
import binascii
import re
from itertools import pairwise
from urllib.parse import unquote

from memory.secret_shapes import Check, Pass, PatternPass, Span

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


def fold(text: str) -> str:
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


def secret_value(value: str, *, quoted: bool, code: bool = True) -> bool:
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
    lower = fold(name)
    found = _WORD_AT_END.search(lower)
    if found is None:
        return lower == "authorization"
    return _named(name, lower, found.start(), 0)


def _text(match: re.Match[str], text: str, group: str) -> str:
    start, end = match.span(group)
    return text[start:end]


def _value(group: str, *, quoted: bool = True, code: bool = True) -> Check:
    def check(match: re.Match[str], text: str) -> Span | None:
        ok = secret_value(_text(match, text, group), quoted=quoted, code=code)
        return match.span(group) if ok else None

    return check


def _not_placeholder(match: re.Match[str], text: str) -> Span | None:
    return None if _placeholder(_text(match, text, "v")) else match.span("v")


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
    one (see :func:`secret_value`)."""
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
    return (start, start + len(value)) if secret_value(value, quoted=quoted) else None


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
    if any(c in "[](){}" for c in value) or not secret_value(value, quoted=False):
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


def _folded(label: str, pattern: str, check: Check, *gates: str) -> PatternPass:
    return PatternPass(label, re.compile(pattern), check, gates, folded=True)


NAME_PASSES: list[Pass] = [
    PatternPass("env-secret", _ENV_LINE, _env_line),
    PatternPass("assigned-secret", _ASSIGNED, _assigned, folded=True),
    _folded(
        "assigned-secret",
        r"(?P<word>pass(?:word|phrase)|passwd|token|secret|api[ _-]?key)[ \t]+(?:is|was)"
        r"[ \t]+[\"'`]?(?P<v>[^\s\"'`,;<>]{6,128}?)\.?(?=[\s\"'`,;]|$)",
        _prose_value,
        " is ",
        " was ",
    ),
    PatternPass(
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
    PatternPass(
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
