"""Reading indexed code chunks: which defines a name, what a body calls, where a name is used.

Works on one chunk's text at a time (no whole-repository parse): Python through ``ast`` where
the chunk parses, every language through definition keywords and call syntax otherwise.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import re
import textwrap
from pathlib import PurePosixPath

import msgspec

from bus.schemas.memory import ContextEntry

MAX_CALLEES = 6
CALL_CONTEXT_LINES = 4  # lines shown on each side of a call site
#: methods of builtin types: looked up as callees only when called on self
COMMON_METHODS = frozenset(
    "append extend insert pop remove get items keys values update setdefault copy join split "
    "strip lstrip rstrip format startswith endswith encode decode lower upper replace add "
    "discard read write close".split()
)
NOT_CALLEES = frozenset(dir(builtins)) | frozenset(keyword.kwlist)
_KEYWORDS = r"(?:def|class|function|func|fn|interface|struct|enum|trait|type)"
_DEF_LINE = re.compile(rf"\s*(?:(?:async|export|pub|public|private|static)\s+)*{_KEYWORDS}\s")
_DEF_NAME = re.compile(rf"{_DEF_LINE.pattern}\s*(?:\([^)]*\)\s*)?(\w+)")
_CALL = re.compile(r"(?:\b(self|cls)\s*\.\s*|(\.)\s*)?\b([A-Za-z_]\w*)\s*\(")
_CLOSERS = ("}", ")", "]", "end")


def symbol_match(wanted: str, found: str) -> int:
    """2: the same name; 1: one qualifies the other (`_merge_url`, `BaseClient._merge_url`)."""
    if not found:
        return 0
    if wanted == found:
        return 2
    return int(found.endswith("." + wanted) or wanted.endswith("." + found))


def short_name(symbol: str) -> str:
    return symbol.rsplit(".", 1)[-1]


def owner(symbol: str) -> str:
    """``BaseClient`` of ``BaseClient._merge_url``; "" for a top-level name."""
    return symbol.rpartition(".")[0]


def is_class(entry: ContextEntry) -> bool:
    """Whether the chunk defines a class (its first definition line says so)."""
    line = next((x for x in entry.text.splitlines() if _DEF_LINE.match(x)), "")
    return bool(re.match(r"\s*(?:(?:export|pub|public)\s+)*(?:class|struct|interface)\s", line))


def member(entry: ContextEntry, name: str) -> ContextEntry | None:
    """The definition of ``name`` inside ``entry`` (a method of a class chunked whole, a
    function in a window of lines): from its definition line to the end of its body, or
    None when the chunk does not define it."""
    if name not in entry.text:  # the common case, and a regex scan of every line is not cheap
        return None
    pattern = re.compile(rf"{_DEF_LINE.pattern}\s*(?:\([^)]*\)\s*)?{re.escape(name)}\b")
    lines = entry.text.splitlines()
    first = next((i for i, line in enumerate(lines) if pattern.match(line)), None)
    if first is None:
        return None
    indent = _indent(lines[first])
    last = len(lines) - 1
    for i in range(first + 1, len(lines)):
        if lines[i].strip() and _indent(lines[i]) <= indent:
            last = i if lines[i].strip().startswith(_CLOSERS) else i - 1
            break
    while last > first and not lines[last].strip():
        last -= 1
    qualified = f"{entry.symbol}.{name}" if entry.symbol and entry.symbol != name else name
    start = entry.start_line + first if entry.start_line else 0
    end = entry.start_line + last if entry.start_line else 0
    text = "\n".join(lines[first : last + 1])
    return msgspec.structs.replace(
        entry, text=text, symbol=qualified, start_line=start, end_line=end
    )


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def usage(name: str, of_class: bool) -> re.Pattern[str]:
    """Where code uses ``name``: a call, or for a class any mention of it."""
    if of_class:
        return re.compile(rf"(?<!\w){re.escape(name)}(?!\w)")
    return re.compile(rf"(?<!\w){re.escape(name)}\s*\(")


def around(entry: ContextEntry, pattern: re.Pattern[str]) -> ContextEntry | None:
    """``entry`` cut to the lines around the first line ``pattern`` finds that is not a
    definition, or None when there is none."""
    if pattern.search(entry.text) is None:
        return None
    lines = entry.text.splitlines()
    at = next(
        (i for i, line in enumerate(lines) if pattern.search(line) and not _DEF_LINE.match(line)),
        None,
    )
    if at is None:
        return None
    symbol, top = _enclosing(entry.symbol, lines, at)
    first = max(0, top, at - CALL_CONTEXT_LINES)
    last = min(len(lines), at + CALL_CONTEXT_LINES + 1)
    start = entry.start_line + first if entry.start_line else 0
    end = entry.start_line + last - 1 if entry.start_line else 0
    text = "\n".join(lines[first:last])
    return msgspec.structs.replace(entry, text=text, start_line=start, end_line=end, symbol=symbol)


def _enclosing(symbol: str, lines: list[str], at: int) -> tuple[str, int]:
    """The name of the definition around line ``at`` of a chunk named ``symbol`` (a method
    of a class chunked whole: ``Checkout.pay``) and the index of its first line (0: none)."""
    indent = _indent(lines[at])
    for i in range(at - 1, -1, -1):
        line = lines[i]
        if line.strip() and _indent(line) < indent and (m := _DEF_NAME.match(line)):
            name = m.group(1)
            if name == short_name(symbol):
                return symbol, i
            return (f"{symbol}.{name}" if symbol else name), i
    return symbol, 0


def called_names(text: str, own: str) -> list[tuple[str, bool]]:
    """(name, called on self) of up to MAX_CALLEES names ``text`` calls, in order, calls on
    self and plain names first; builtins, keywords, ``own`` and builtin-type methods called
    on other objects left out."""
    calls = _python_calls(text)
    if calls is None:
        calls = [
            (m.group(3), m.group(1) is not None, m.group(1) is not None or m.group(2) is not None)
            for line in text.splitlines()
            if not _DEF_LINE.match(line)
            for m in _CALL.finditer(line)
        ]
    seen: dict[str, tuple[bool, bool]] = {}
    for name, via_self, attribute in calls:
        common = attribute and not via_self and name in COMMON_METHODS
        if not (name in NOT_CALLEES or name == own or common):
            seen.setdefault(name, (via_self, attribute))
    ordered = sorted(seen.items(), key=lambda x: x[1][1] and not x[1][0])  # stable
    return [(name, via_self) for name, (via_self, _) in ordered[:MAX_CALLEES]]


def _python_calls(text: str) -> list[tuple[str, bool, bool]] | None:
    """(name, on self, an attribute) of each call in order, or None when not Python."""
    try:
        tree = ast.parse(textwrap.dedent(text))
    except (SyntaxError, ValueError, RecursionError):
        return None
    calls = sorted(
        (n for n in ast.walk(tree) if isinstance(n, ast.Call)),
        key=lambda n: (n.lineno, n.col_offset),
    )
    found: list[tuple[str, bool, bool]] = []
    for call in calls:
        f = call.func
        if isinstance(f, ast.Name):
            found.append((f.id, False, False))
        elif isinstance(f, ast.Attribute):
            on_self = isinstance(f.value, ast.Name) and f.value.id in ("self", "cls")
            found.append((f.attr, on_self, True))
    return found


def distance(path: str, other: str) -> int:
    """0 the same file, 1 the same directory, 2 elsewhere."""
    if path == other:
        return 0
    return 1 if PurePosixPath(path).parent == PurePosixPath(other).parent else 2
