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
- a place: a URL's password, an ``Authorization`` header, ``curl -u user:pass``;
- the environment: the value of one of this process's secret-named variables, bare, with no
  name or shape beside it (:mod:`memory.secret_env`).

A value after a secret's name stays when it is plainly not one: a placeholder
(``your-api-key-here``, ``xxx``, ``<token>``, ``${TOKEN}``), an expression or a variable in
code (``os.environ["API_KEY"]``, ``api_key=api_key``, ``token: str``), or words with spaces.
Portkey keys have no fixed shape: they are found by their names (``PORTKEY_API_KEY``,
``x-portkey-api-key``, ``virtual_key``).

Identifiers cannot be redacted where they are keys: :func:`find_secret` says what one holds
(the engine refuses it), :func:`redact_identifier` redacts a file's path inside an indexed
repository (the same text :func:`redact` makes of it in metadata).

The passes live in :mod:`memory.secret_shapes` (the shape alone),
:mod:`memory.secret_values` (a name, a place, and what counts as a secret value) and
:mod:`memory.secret_env` (the environment's secret values); this module
runs them all and rewrites the text.

Speed: every pass reads the original text and records spans; the text is rewritten once.
Case-insensitive patterns run over one lower-cased copy (same positions), and each pattern
starts with a literal, so ``re`` searches for it instead of trying every offset; bounded
quantifiers and possessive loops keep hostile input linear (``bench/redaction.py``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

from memory.secret_env import environment_pass
from memory.secret_shapes import SHAPE_PASSES, Pass, Span
from memory.secret_values import NAME_PASSES, fold, secret_name, secret_value

__all__ = ["find_secret", "redact", "redact_identifier", "redact_value", "secret_name"]

_PASSES: list[Pass] = [*SHAPE_PASSES, *NAME_PASSES, environment_pass]


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


def _scan(text: str) -> tuple[str, list[str]]:
    found = _Found()
    lower = fold(text)
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


def redact_value(value: Any, *, keys: bool = True) -> tuple[Any, int]:
    """Redact every string inside a JSON-like value, recursively: dictionary keys too, and
    the whole of a string stored under a secret's name (``{"db_password": "hunter2!"}``).
    ``keys=False`` leaves dictionary keys and what a key's name implies alone, for values
    whose keys are field names from the code (a task record), not caller text."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        out, total = [], 0
        for item in value:
            clean, n = redact_value(item, keys=keys)
            out.append(clean)
            total += n
        return out, total
    if isinstance(value, dict):
        return _redact_dict(value) if keys else _redact_dict_values(value)
    return value, 0


def _redact_dict_values(value: dict[Any, Any]) -> tuple[dict[Any, Any], int]:
    result: dict[Any, Any] = {}
    total = 0
    for key, item in value.items():
        result[key], n = redact_value(item, keys=False)
        total += n
    return result, total


def _redact_dict(value: dict[Any, Any]) -> tuple[dict[Any, Any], int]:
    result: dict[Any, Any] = {}
    total = 0
    for key, item in value.items():
        clean_key, n_key = redact(key) if isinstance(key, str) else (key, 0)
        if isinstance(item, str) and isinstance(key, str) and secret_name(key):
            clean, n = redact(item)
            if n == 0 and secret_value(item.strip(), quoted=True):
                clean, n = _marker("assigned-secret", item), 1
        else:
            clean, n = redact_value(item)
        while clean_key in result:  # two keys redacted alike: keep both
            clean_key = f"{clean_key}'"
        result[clean_key] = clean
        total += n + n_key
    return result, total
