"""Keyword text for the L3 full-text index, and keyword queries from natural language.

Code names things in compounds (``read_timeout``, ``HTTPTransport``); people ask in words
("read timeout", "http transport"). Both sides are split the same way so they meet.
"""

from __future__ import annotations

import re
from typing import Any

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_WORD = re.compile(r"[a-z0-9]+")
MAX_TERMS = 24
MAX_BODY_CHARS = 65_536

STOPWORDS = frozenset(
    """
    a an and are as at be been being but by can could did do does doing for from had has have
    how i if in into is it its itself me my of on or our should so than that the their them
    then there these they this those to up was we were what when where which while who whom
    why will with would you your yours about after again all also any because before below
    between both each few further here just more most no nor not now off once only other out
    over own same some such too under until very get gets got make makes find finds use used
    uses using way ways work works thing things happen happens code function method class
    file module does done give given let lets need needs want wants one two
    """.split()
)


def split_identifier(name: str) -> list[str]:
    """``read_timeout`` -> [read, timeout]; ``HTTPTransport`` -> [http, transport]."""
    parts: list[str] = []
    for piece in name.split("_"):
        parts.extend(m.group(0).lower() for m in _CAMEL.finditer(piece))
    return [p for p in parts if p]


def body_text(text: str) -> str:
    """The body as indexed: the text plus the parts of its compound identifiers."""
    text = text[:MAX_BODY_CHARS]
    extra: list[str] = []
    seen: set[str] = set()
    for match in _IDENT.finditer(text):
        name = match.group(0)
        if name in seen:
            continue
        seen.add(name)
        parts = split_identifier(name)
        if len(parts) > 1:
            extra.extend(parts)
    return text + ("\n" + " ".join(extra) if extra else "")


def head_text(metadata: dict[str, Any]) -> str:
    """High-weight keyword text: path parts, symbol names, title, tags."""
    words: list[str] = []
    for key in ("path", "symbol", "title"):
        value = metadata.get(key)
        if isinstance(value, str) and value:
            words.append(value)
            words.extend(split_identifier(" ".join(re.split(r"[/.\-\s]+", value))))
            for piece in re.split(r"[/.\-\s]+", value):
                words.extend(split_identifier(piece))
    tags = metadata.get("tags")
    if isinstance(tags, list):
        words.extend(t for t in tags if isinstance(t, str))
    return " ".join(words)


def query_terms(query: str) -> list[str]:
    """Distinct lower-case terms of ``query`` worth matching, compounds split, stopwords out."""
    terms: list[str] = []
    for match in _IDENT.finditer(query):
        name = match.group(0)
        parts = split_identifier(name)
        candidates = [name.lower(), *parts] if len(parts) > 1 else parts
        for term in candidates:
            for word in _WORD.findall(term):
                if len(word) > 1 and word not in STOPWORDS and word not in terms:
                    terms.append(word)
    return terms[:MAX_TERMS]


def embed_input(text: str, metadata: dict[str, Any]) -> str:
    """What the model reads for an item: where it lives and what it is named, then the text."""
    header = " ".join(
        str(metadata[key])
        for key in ("path", "symbol", "title")
        if isinstance(metadata.get(key), str) and metadata[key]
    )
    return f"{header}\n{text}" if header else text
