"""The review rules that do not trust the model: evidence, coverage, and diffs cut to size.

Pure and synchronous (they read files of the patched tree, nothing else).

- :func:`verify_findings` keeps a finding only when its ``evidence`` checks out: it is one of
  this review's tool finding ids (``ruff-3``, also ``ruff-3: unused import``), or a snippet
  that really occurs at the finding's file and line (±2 lines) in the patched tree, a file
  inside ``root`` (symlinks resolved). Everything else is dropped and counted.
- :func:`uncovered` names the changed files the review says nothing about.
- :func:`split_diff` cuts a ``git diff`` into parts of whole files, a file larger than a part
  into parts of whole hunks with the file's header on each; nothing is ever truncated or lost:
  every line of the diff is in exactly one part, except the repeated headers.
- :func:`files_in_diff` lists the files a diff touches (new paths; deleted files included).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Collection, Sequence
from pathlib import Path

from bus.schemas.tasks import Finding

#: how far from the finding's line a quoted snippet may start
LINE_SLACK = 2
#: the least a one-line snippet must say (non-space characters)
MIN_SNIPPET_CHARS = 4
#: a file larger than this is not read for evidence
MAX_FILE_BYTES = 8 * 1024 * 1024

_QUOTES = ("`", '"', "'")
_FENCE = re.compile(r"^```[^\n]*\n(.*?)\n?```$", re.DOTALL)


# ---- evidence ---------------------------------------------------------------------------------


def cites_tool(evidence: str, tool_ids: Collection[str]) -> bool:
    """Whether ``evidence`` (stripped) is one of ``tool_ids``, or starts with one followed by a
    character that is not a letter or digit (``ruff-3: ...``, never ``ruff-30`` for
    ``ruff-3``)."""
    text = evidence.strip()
    if not text:
        return False
    if text in tool_ids:
        return True
    for tool_id in tool_ids:
        if tool_id and text.startswith(tool_id):
            following = text[len(tool_id)]
            if not following.isalnum():
                return True
    return False


def unquote(evidence: str) -> str:
    """``evidence`` without a surrounding code fence (```` ```lang ... ``` ````) or matching
    quotes and backticks."""
    text = evidence.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] == text[0]:
        text = text[1:-1].strip()
    return text


def snippet_lines(evidence: str) -> list[str]:
    """The quoted snippet's lines, each stripped, blank ones left out."""
    return [line.strip() for line in unquote(evidence).splitlines() if line.strip()]


def inside(root: Path, file: str) -> Path | None:
    """The file ``file`` names under ``root`` once resolved (symlinks too), or None when it
    is missing, not a regular file, or outside ``root``."""
    if not file or "\x00" in file:
        return None
    try:
        base = root.resolve(strict=True)
        path = (root / file).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path


def _read_lines(path: Path) -> list[str] | None:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        return path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None


def snippet_at(lines: Sequence[str], line: int, snippet: Sequence[str]) -> bool:
    """Whether ``snippet`` (stripped, non-blank lines) occurs in ``lines`` starting within
    ``LINE_SLACK`` of ``line`` (1-based): each snippet line contained in one file line, the
    file's lines taken in order with blank ones skipped. A one-line snippet must have at
    least ``MIN_SNIPPET_CHARS`` non-space characters."""
    if line < 1 or not snippet:
        return False
    if sum(len("".join(part.split())) for part in snippet) < MIN_SNIPPET_CHARS:
        return False
    first = max(1, line - LINE_SLACK)
    last = min(len(lines), line + LINE_SLACK)
    for start in range(first, last + 1):
        if _matches_from(lines, start - 1, snippet):
            return True
    return False


def _matches_from(lines: Sequence[str], index: int, snippet: Sequence[str]) -> bool:
    if not lines[index].strip():
        return False
    wanted = 0
    while index < len(lines) and wanted < len(snippet):
        here = lines[index].strip()
        index += 1
        if not here:
            continue
        if snippet[wanted] not in here:
            return False
        wanted += 1
    return wanted == len(snippet)


def verify_findings(
    root: Path, findings: Sequence[Finding], tool_ids: Collection[str]
) -> tuple[list[Finding], int]:
    """(the findings whose evidence checks out, how many were dropped), in their order."""
    ids = frozenset(tool_ids)
    cache: dict[str, list[str] | None] = {}
    kept: list[Finding] = []
    for finding in findings:
        if _verified(Path(root), finding, ids, cache):
            kept.append(finding)
    return kept, len(findings) - len(kept)


def _verified(
    root: Path, finding: Finding, ids: frozenset[str], cache: dict[str, list[str] | None]
) -> bool:
    evidence = finding.evidence.strip()
    if not evidence:
        return False
    if cites_tool(evidence, ids):
        return True
    snippet = snippet_lines(evidence)
    if finding.line < 1 or not snippet:
        return False
    if finding.file not in cache:
        path = inside(root, finding.file)
        cache[finding.file] = _read_lines(path) if path is not None else None
    lines = cache[finding.file]
    return lines is not None and snippet_at(lines, finding.line, snippet)


# ---- coverage ---------------------------------------------------------------------------------


def normalise(path: str) -> str:
    """A repository path as the rules compare it: POSIX, no ``./``, no trailing ``/``."""
    text = path.strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return posixpath.normpath(text) if text else ""


def uncovered(changed: Collection[str], covered: Collection[str]) -> list[str]:
    """The changed files (normalised, sorted, once each) that ``covered`` does not name."""
    seen = {normalise(path) for path in covered}
    return sorted({normalise(path) for path in changed} - seen - {""})


# ---- diffs ------------------------------------------------------------------------------------


def _file_chunks(diff: str) -> list[str]:
    """The diff cut before every ``diff --git`` line; text before the first stays with it."""
    chunks: list[str] = []
    current: list[str] = []
    seen_header = False
    for line in diff.splitlines(keepends=True):
        if line.startswith("diff --git "):
            if seen_header:
                chunks.append("".join(current))
                current = []
            seen_header = True
        current.append(line)
    if current:
        chunks.append("".join(current))
    return chunks


def _hunks(chunk: str) -> tuple[str, list[str]]:
    """(a file's header, its hunks), cut before every ``@@`` line."""
    header: list[str] = []
    hunks: list[list[str]] = []
    for line in chunk.splitlines(keepends=True):
        if line.startswith("@@"):
            hunks.append([line])
        elif hunks:
            hunks[-1].append(line)
        else:
            header.append(line)
    return "".join(header), ["".join(h) for h in hunks]


def split_diff(diff: str, max_chars: int) -> list[str]:
    """``diff`` in parts of at most ``max_chars`` where possible: whole files packed in order;
    a file larger than ``max_chars`` alone, in parts of whole hunks, each with the file's
    header; a single hunk larger than ``max_chars`` is one part of its own, never cut."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, not {max_chars!r}")
    parts: list[str] = []
    current = ""
    for chunk in _file_chunks(diff):
        if len(chunk) <= max_chars:
            if current and len(current) + len(chunk) > max_chars:
                parts.append(current)
                current = ""
            current += chunk
            continue
        if current:
            parts.append(current)
            current = ""
        header, hunks = _hunks(chunk)
        if not hunks:
            parts.append(chunk)
            continue
        piece = header
        for hunk in hunks:
            if piece != header and len(piece) + len(hunk) > max_chars:
                parts.append(piece)
                piece = header
            piece += hunk
        parts.append(piece)
    if current:
        parts.append(current)
    return parts


_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


def _unquote_path(text: str) -> str:
    """A path as git writes it: C-quoted (``"b/t\\303\\244st"``) when it has odd characters."""
    text = text.rstrip("\t\r\n")
    if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
        return text
    body, out, i = text[1:-1], bytearray(), 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            following = body[i + 1]
            if following in "01234567" and re.match(r"[0-7]{3}", body[i + 1 : i + 4]):
                out.append(int(body[i + 1 : i + 4], 8))
                i += 4
                continue
            if following in _ESCAPES:
                out.append(_ESCAPES[following])
                i += 2
                continue
        out += char.encode("utf-8")
        i += 1
    return out.decode("utf-8", errors="replace")


def _strip_prefix(path: str, prefix: str) -> str | None:
    return path[len(prefix) :] if path.startswith(prefix) else None


def _path_of(chunk: str) -> str | None:
    header, _ = _hunks(chunk)
    minus = plus = renamed = None
    first = ""
    for line in header.splitlines():
        if line.startswith("diff --git "):
            first = line[len("diff --git ") :]
        elif line.startswith("+++ "):
            plus = _unquote_path(line[4:])
        elif line.startswith("--- "):
            minus = _unquote_path(line[4:])
        elif line.startswith("rename to "):
            renamed = _unquote_path(line[len("rename to ") :])
        elif line.startswith("copy to "):
            renamed = _unquote_path(line[len("copy to ") :])
    if plus is not None and plus != "/dev/null":
        return _strip_prefix(plus, "b/") or plus
    if renamed:
        return renamed
    if plus == "/dev/null" and minus is not None and minus != "/dev/null":
        return _strip_prefix(minus, "a/") or minus
    return _from_git_line(first)


def _from_git_line(rest: str) -> str | None:
    """The b/ path of ``diff --git a/X b/Y`` (paths with spaces: X == Y, or quoted)."""
    rest = rest.rstrip("\r\n")
    if not rest:
        return None
    if rest.endswith('"'):
        start = rest.rfind(' "')
        if start >= 0:
            path = _unquote_path(rest[start + 1 :])
            return _strip_prefix(path, "b/") or path
    if rest.startswith("a/") and (len(rest) - 1) % 2 == 0:
        half = (len(rest) - 1) // 2
        left, right = rest[:half], rest[half + 1 :]
        if right.startswith("b/") and left[2:] == right[2:]:
            return right[2:]
    marker = rest.rfind(" b/")
    if marker >= 0:
        return rest[marker + 3 :]
    return None


def files_in_diff(diff: str) -> list[str]:
    """The paths a diff touches, in its order, once each: the new path (``+++ b/``, ``rename
    to``), the old one for a deleted file."""
    found: list[str] = []
    for chunk in _file_chunks(diff):
        path = _path_of(chunk)
        if path and path not in found:
            found.append(path)
    return found
