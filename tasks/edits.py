"""SEARCH/REPLACE edit blocks: read them from a model's answer, then apply all of them or none.

Guarantees:

* Parsing (:func:`parse_blocks`) follows Aider's convention: the path alone on a line, then a
  fence holding ``<<<<<<< SEARCH`` / ``=======`` / ``>>>>>>> REPLACE``. The path line may also
  stand inside the fence just before the SEARCH marker; later blocks without a path line of
  their own (in the same fence or the next) keep the last one. A path line is one token,
  stripped of backticks, ``**``, a ``#`` heading mark and a trailing colon, holding a ``.`` or
  ``/`` or a bare name (``Makefile``, ``LICENSE``): a lone word is prose. Text outside blocks
  is ignored; a malformed block (no ``=======``, no ``>>>>>>> REPLACE``, no path) is a
  :class:`ParseProblem` with a reason, never dropped silently. Blocks and problems share one
  index, in answer order.
* Applying (:func:`apply_blocks`) is a dry run over every block in order, in memory (a later
  block sees the earlier blocks' result), then all or nothing: when any block fails nothing is
  written, and the outcome's ``applied``, ``changed``, ``created`` are empty and ``drift`` is 0.
* A SEARCH matches whole lines, exactly once. Only when an exact match finds nothing, and only
  if unique themselves, two tolerances: a uniform leading-whitespace shift of the whole block
  (blank lines ignore indentation; REPLACE is shifted by the same delta), and one spurious blank
  first or last SEARCH line (dropped from REPLACE too where blank there). Never fuzzy matching:
  the "did you mean" lines go to the model only.
* REPLACE is written as sent, only the indentation delta applied: no regex semantics, no
  whitespace stripping. Untouched lines keep their endings, new lines take the file's dominant
  one (CRLF files stay CRLF); the trailing-newline state and a UTF-8 BOM are kept.
* Paths stay in the worktree: absolute paths, ``~``, ``..``, NUL bytes and symlinks resolving
  outside are refused, so is any ``.git`` component. Binary files (NUL in the first 8 KB) and
  files not valid UTF-8 are refused, never rewritten.
* Writes are atomic per file (a temp file in the same directory, then ``os.replace``), staged
  for every file before the first replace; modes are kept, new files get 0o644 and parents.
  An OSError while writing propagates, and no temp file is left behind.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import stat
import tempfile
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

Refusal = Literal[
    "parse_error", "not_found", "ambiguous", "line_numbers", "no_change", "outside_worktree",
    "git_dir", "missing_file", "file_exists", "binary", "not_utf8",
]  # fmt: skip

_SEARCH = re.compile(r"^<{5,9} SEARCH\s*$")
_DIVIDER = re.compile(r"^={7}\s*$")
_REPLACE = re.compile(r"^>{5,9} REPLACE\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_NUMBERED = re.compile(r"^\s*\d+\s*[:|]?\s")
_BARE_NAMES = frozenset({"LICENSE", "README", "COPYING", "NOTICE", "AUTHORS", "CODEOWNERS"})
_EXCERPT = 300
_PEEK = 8192
_NEW_MODE = 0o644
_VOTES = 20  # the most windows a did-you-mean compares
_CLOSE = 0.6  # the least SequenceMatcher ratio worth showing as "did you mean"


@dataclass(frozen=True, slots=True)
class EditBlock:
    path: str  # as the model wrote it (normalised: stripped)
    search: str  # text between the markers, each line ending "\n" (empty for a new file)
    replace: str
    index: int  # 0-based position among the answer's blocks


@dataclass(frozen=True, slots=True)
class ParseProblem:
    index: int
    reason: str
    excerpt: str  # bounded to ~300 characters


@dataclass(frozen=True, slots=True)
class BlockFailure:
    block: EditBlock
    refusal: Refusal
    reason: str  # one sentence for the model, naming the path
    did_you_mean: str  # closest real lines, "" when none


@dataclass(frozen=True, slots=True)
class EditOutcome:
    applied: tuple[EditBlock, ...]  # empty when anything failed
    failures: tuple[BlockFailure, ...]
    changed: tuple[str, ...]  # worktree-relative POSIX paths written (or that would be)
    created: tuple[str, ...]
    drift: int  # blocks matched by indentation/blank-line drift

    @property
    def ok(self) -> bool:
        return not self.failures


def parse_blocks(answer: str) -> tuple[list[EditBlock], list[ParseProblem]]:
    """Every SEARCH/REPLACE block of ``answer``, and a problem for every malformed one."""
    lines = [line.removesuffix("\r") for line in answer.split("\n")]
    blocks: list[EditBlock] = []
    problems: list[ParseProblem] = []
    path: str | None = None  # the path line in force
    prev = ""  # the last non-blank line seen outside blocks
    before_fence = ""  # the last non-blank line before the open fence
    in_fence = False
    i = 0
    while i < len(lines):
        line = lines[i]
        index = len(blocks) + len(problems)
        if _SEARCH.match(line):
            own = _as_path(before_fence if in_fence and _FENCE.match(prev) else prev)
            path = own or path
            parts, end, resume = _read_block(lines, i)
            excerpt = "\n".join(lines[i:end])[:_EXCERPT]
            if isinstance(parts, str):
                problems.append(ParseProblem(index, parts, excerpt))
            elif path is None:
                problems.append(ParseProblem(index, "no file path line before the block", excerpt))
            else:
                blocks.append(EditBlock(path, parts[0], parts[1], index))
            prev, i = ">>>>>>> REPLACE", resume
            continue
        if _REPLACE.match(line):
            problems.append(
                ParseProblem(index, "a >>>>>>> REPLACE without its SEARCH", line[:_EXCERPT])
            )
        elif _FENCE.match(line):
            before_fence = prev if not in_fence else before_fence
            in_fence = not in_fence
        prev = line if line.strip() else prev
        i += 1
    return blocks, problems


def _read_block(lines: list[str], start: int) -> tuple[tuple[str, str] | str, int, int]:
    """The block's (search, replace) or a reason; where it ends; where scanning resumes."""
    i = start + 1
    while i < len(lines) and not _DIVIDER.match(lines[i]):
        if _REPLACE.match(lines[i]):
            return "no ======= between SEARCH and REPLACE", i + 1, i + 1
        if _SEARCH.match(lines[i]):
            return "no ======= after <<<<<<< SEARCH", i, start + 1
        i += 1
    if i == len(lines):
        return "no ======= after <<<<<<< SEARCH", i, start + 1
    divider = i
    i += 1
    while i < len(lines) and not _REPLACE.match(lines[i]):
        if _SEARCH.match(lines[i]):
            break
        i += 1
    if i == len(lines) or not _REPLACE.match(lines[i]):
        return "no >>>>>>> REPLACE after =======", i, divider + 1
    search = "".join(x + "\n" for x in lines[start + 1 : divider])
    replace = "".join(x + "\n" for x in lines[divider + 1 : i])
    return (search, replace), i + 1, i + 1


def _as_path(line: str) -> str | None:
    """The path a line names, or None when it is not a path line."""
    text = line.strip()
    if not text or _FENCE.match(text) or _SEARCH.match(text) or _REPLACE.match(text):
        return None
    text = re.sub(r"^#+\s+", "", text)
    last = ""
    while text != last:
        last, text = text, text.strip().strip("*`").strip().removesuffix(":")
    if not text or any(c.isspace() for c in text):
        return None
    if "." in text or "/" in text or text.endswith("file") or text in _BARE_NAMES:
        return text
    return None  # a lone word ("Then:") is prose


class _Refused(Exception):
    def __init__(self, refusal: Refusal, reason: str, did_you_mean: str = "") -> None:
        super().__init__(reason)
        self.refusal, self.reason, self.did_you_mean = refusal, reason, did_you_mean


@dataclass(slots=True)
class _File:
    rel: str
    path: Path
    lines: list[str]  # with their own endings
    original: str | None  # None: the file did not exist
    newline: str
    bom: bool
    mode: int

    def text(self) -> str:
        return "".join(self.lines)

    def data(self) -> bytes:
        return (("\ufeff" if self.bom else "") + self.text()).encode("utf-8")


def apply_blocks(root: Path, blocks: Sequence[EditBlock], *, dry_run: bool = False) -> EditOutcome:
    """Apply ``blocks`` under ``root`` in order, all or nothing (nothing at all for a dry run)."""
    top = root.resolve()
    files: dict[str, _File] = {}
    failures: list[BlockFailure] = []
    drift = 0
    for block in blocks:
        try:
            drift += _apply_one(top, block, files)
        except _Refused as no:
            failures.append(BlockFailure(block, no.refusal, no.reason, no.did_you_mean))
    if failures:
        return EditOutcome((), tuple(failures), (), (), 0)
    touched = [f for f in files.values() if f.text() != f.original]
    if not dry_run:
        _write_all(touched)
    created = tuple(f.rel for f in touched if f.original is None)
    return EditOutcome(tuple(blocks), (), tuple(f.rel for f in touched), created, drift)


def _apply_one(top: Path, block: EditBlock, files: dict[str, _File]) -> int:
    """Apply one block to the in-memory files; 1 when it matched by drift. Raises _Refused."""
    name = block.path
    rel, real = _locate(top, name)
    if block.search == block.replace:
        raise _Refused("no_change", f"The block for {name} has identical SEARCH and REPLACE.")
    if not block.search:
        if rel not in files and real.exists() and (not real.is_file() or real.stat().st_size):
            raise _Refused("file_exists", f"{name} already exists; edit it with a SEARCH.")
        file = files.get(rel) or _load(rel, real, name) or _new(rel, real, top, name)
        if file.text():
            raise _Refused("file_exists", f"{name} already has content; edit it with a SEARCH.")
        file.lines = _split(block.replace.replace("\n", file.newline))
        files[rel] = file
        return 0
    file = files.get(rel) or _load(rel, real, name)
    if file is None:
        raise _Refused("missing_file", f"{name} does not exist; leave SEARCH empty to create it.")
    files[rel] = file
    return _edit(file, block)


def _locate(top: Path, name: str) -> tuple[str, Path]:
    """The worktree-relative POSIX path and the real path ``name`` leads to."""
    if "\x00" in name:
        raise _Refused("outside_worktree", f"The path {name!r} holds a NUL byte.")
    pure = PurePosixPath(name)
    if pure.is_absolute() or name.startswith("~"):
        raise _Refused("outside_worktree", f"{name} is absolute; give paths from the repo root.")
    if ".." in pure.parts:
        raise _Refused("outside_worktree", f"{name} has a '..' component; it may not leave.")
    if any(p.lower() == ".git" for p in pure.parts):
        raise _Refused("git_dir", f"{name} is inside .git, which edits may not touch.")
    try:
        real = top.joinpath(*pure.parts).resolve()
    except (OSError, RuntimeError):
        raise _Refused("outside_worktree", f"{name} runs into a symlink loop.") from None
    if not real.is_relative_to(top) or real == top:
        raise _Refused("outside_worktree", f"{name} does not lead to a file inside the worktree.")
    rel = real.relative_to(top)
    if any(p.lower() == ".git" for p in rel.parts):
        raise _Refused("git_dir", f"{name} leads into .git, which edits may not touch.")
    return rel.as_posix(), real


def _load(rel: str, real: Path, name: str) -> _File | None:
    """The file as it is on disk, None when there is none. Raises _Refused."""
    if not real.exists():
        return None
    if not real.is_file():
        raise _Refused("missing_file", f"{name} is not a regular file.")
    data = real.read_bytes()
    if b"\x00" in data[:_PEEK]:
        raise _Refused("binary", f"{name} is a binary file; it cannot be edited as text.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused("not_utf8", f"{name} is not valid UTF-8; it cannot be edited.") from None
    bom = text.startswith("\ufeff")
    text = text.removeprefix("\ufeff")
    lines = _split(text)
    crlf = sum(x.endswith("\r\n") for x in lines)
    newline = "\r\n" if crlf * 2 > sum(x.endswith("\n") for x in lines) else "\n"
    mode = stat.S_IMODE(real.stat().st_mode)
    return _File(rel, real, lines, text, newline, bom, mode)


def _new(rel: str, real: Path, top: Path, name: str) -> _File:
    for parent in real.parents:
        if parent == top:
            break
        if parent.exists() and not parent.is_dir():
            raise _Refused("file_exists", f"{name} cannot be created: {parent.name} is a file.")
    return _File(rel, real, [], None, "\n", False, _NEW_MODE)


def _edit(file: _File, block: EditBlock) -> int:
    body = [_content(x) for x in file.lines]
    search, replace = block.search.split("\n")[:-1], block.replace.split("\n")[:-1]
    hits, drifted = _match(body, search, replace)
    name = f"The SEARCH for {block.path}"
    if len(hits) > 1:
        at = ", ".join(str(h[0] + 1) for h in hits[:5])
        why = f"{name} matches {len(hits)} times (lines {at}); add lines to make it unique."
        raise _Refused("ambiguous", why)
    if not hits:
        shown = [x for x in search if x.strip()]
        numbered = sum(bool(_NUMBERED.match(x)) and x not in set(body) for x in shown)
        if shown and numbered * 2 > len(shown):
            why = f"{name} has line numbers the file lacks; copy the lines without them."
            raise _Refused("line_numbers", why)
        why = f"{name} is not in the file; it must match exactly, whitespace included."
        raise _Refused("not_found", why, _closest(body, search))
    at, length, new = hits[0]
    if new is None:
        why = f"{name} matches only dedented, and REPLACE cannot be dedented the same."
        raise _Refused("not_found", why)
    _splice(file, at, length, new)
    return int(drifted)


_Hit = tuple[int, int, list[str] | None]  # start, lines replaced, the new lines (None: no delta)


def _match(body: list[str], search: list[str], replace: list[str]) -> tuple[list[_Hit], bool]:
    """The places SEARCH matches: exact first, else the first tolerance that finds any."""
    exact = _exact(body, search)
    if exact:
        return [(i, len(search), replace) for i in exact], False
    variants = _trimmed(search, replace)
    for s, r in variants[1:]:
        found = _exact(body, s)
        if found:
            return [(i, len(s), r) for i in found], True
    for s, r in variants:
        shifted = _shifted(body, s)
        if shifted:
            return [(i, len(s), _reindent(r, delta)) for i, delta in shifted], True
    return [], False


def _exact(body: list[str], search: list[str]) -> list[int]:
    return [i for i in range(len(body) - len(search) + 1) if body[i : i + len(search)] == search]


def _trimmed(search: list[str], replace: list[str]) -> list[tuple[list[str], list[str]]]:
    """The block as sent, then without a blank first, last, or both lines (not all blank)."""
    out = [(search, replace)]
    for head, tail in ((1, 0), (0, 1), (1, 1)):
        s, r = search, replace
        if head and not s[0].strip():
            s, r = s[1:], (r[1:] if r and not r[0].strip() else r)
        if tail and s and not s[-1].strip():
            s, r = s[:-1], (r[:-1] if r and not r[-1].strip() else r)
        if len(s) == len(search) - head - tail and any(x.strip() for x in s):
            out.append((s, r))
    return out


_Delta = tuple[str, str]  # (indentation added by the file, indentation the file lacks)


def _shifted(body: list[str], search: list[str]) -> list[tuple[int, _Delta]]:
    """Where SEARCH matches with one uniform indentation delta, and that delta."""
    n = len(search)
    return [(i, d) for i in range(len(body) - n + 1) if (d := _delta(body[i : i + n], search))]


def _delta(window: list[str], search: list[str]) -> _Delta | None:
    """The one indentation delta taking SEARCH to the window; None when there is none."""
    delta: _Delta | None = None
    for have, want in zip(window, search, strict=True):
        if not want.strip() or not have.strip():
            if want.strip() or have.strip():
                return None
            continue
        hi, wi = _indent(have), _indent(want)
        if have[len(hi) :] != want[len(wi) :]:
            return None
        if hi.endswith(wi):
            this = (hi[: len(hi) - len(wi)], "")
        elif wi.endswith(hi):
            this = ("", wi[: len(wi) - len(hi)])
        else:
            return None
        if delta is not None and this != delta:
            return None
        delta = this
    return delta


def _reindent(replace: list[str], delta: _Delta) -> list[str] | None:
    add, cut = delta
    out = []
    for line in replace:
        if not line.strip():
            out.append(line)
        elif line.startswith(cut):
            out.append(add + line[len(cut) :])
        else:
            return None
    return out


def _splice(file: _File, at: int, length: int, new: list[str]) -> None:
    lines = list(file.lines)
    at_end = at + length == len(lines)
    open_end = bool(lines) and not lines[-1].endswith("\n")
    fresh = [x + file.newline for x in new]
    if at_end and open_end:  # keep the file's missing final newline
        if fresh:
            fresh[-1] = new[-1]
        elif at > 0:
            lines[at - 1] = _content(lines[at - 1])
    file.lines = lines[:at] + fresh + lines[at + length :]


def _closest(body: list[str], search: list[str]) -> str:
    """The window of the file most like SEARCH, "" when none is close: candidate windows from
    lines equal (or, failing that, close) to SEARCH lines, scored by the mean SequenceMatcher
    ratio of their aligned lines, indentation aside."""
    n = min(len(search), len(body))
    want = [x.strip() for x in search[:n]]
    if not n or not any(want):
        return ""
    where: dict[str, list[int]] = {}
    for i, line in enumerate(body):
        where.setdefault(line.strip(), []).append(i)
    votes: Counter[int] = Counter()
    for j, line in enumerate(want):
        for i in where.get(line, [])[:_VOTES] if line else ():
            votes[i - j] += 1
    if not votes:  # no line is right: the lines closest to the longest SEARCH lines
        distinct = {line: j for j, line in enumerate(want) if line}
        for line, j in sorted(distinct.items(), key=lambda kv: -len(kv[0]))[:3]:
            for near in difflib.get_close_matches(line, list(where), 3, _CLOSE):
                votes.update(i - j for i in where[near][:_VOTES])
    best, at = _CLOSE, -1
    for start, _ in votes.most_common(_VOTES):
        start = max(0, min(start, len(body) - n))
        pairs = zip(want, body[start : start + n], strict=True)
        score = sum(difflib.SequenceMatcher(None, w, h.strip()).ratio() for w, h in pairs) / n
        if score > best:
            best, at = score, start
    return "" if at < 0 else "".join(x + "\n" for x in body[at : at + n])


def _write_all(files: list[_File]) -> None:
    staged: list[tuple[str, Path]] = []
    try:
        for file in files:
            file.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=file.path.parent, prefix=f".{file.path.name}.")
            staged.append((tmp, file.path))
            with os.fdopen(fd, "wb") as out:
                out.write(file.data())
            os.chmod(tmp, file.mode)
        for tmp, dest in staged:
            os.replace(tmp, dest)
    except BaseException:
        for tmp, _ in staged:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


def _split(text: str) -> list[str]:
    """Lines with their endings, split on "\\n" only."""
    parts = text.split("\n")
    return [x + "\n" for x in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _content(line: str) -> str:
    if line.endswith("\r\n"):
        return line[:-2]
    return line.removesuffix("\n")


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def failure_report(failures: Sequence[BlockFailure], problems: Sequence[ParseProblem] = ()) -> str:
    """The text sent back to the model: for each failed block its path, reason, the SEARCH it
    sent, and the did-you-mean lines; asking to resend only those blocks."""
    parts = [
        f"{len(failures) + len(problems)} of your SEARCH/REPLACE blocks could not be used, so no "
        "file was changed. Resend only these blocks, corrected, against the files as they are "
        "now; the other blocks are kept."
    ]
    for problem in problems:
        parts += [f"\nA block could not be read: {problem.reason}.", _fenced(problem.excerpt)]
    for failure in failures:
        block = failure.block
        parts.append(f"\n{block.path} ({failure.refusal}): {failure.reason}")
        if block.search:
            parts += ["The SEARCH you sent:", _fenced(block.search[:4000])]
        if failure.did_you_mean:
            parts += ["Did you mean these lines of the file?", _fenced(failure.did_you_mean)]
    return "\n".join(parts)


def failure_key(failure: BlockFailure) -> str:
    """A stable key (path + refusal + hash of search) so the coder can see 'the same failing
    edit twice in a row'."""
    digest = hashlib.sha256(failure.block.search.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{failure.block.path}|{failure.refusal}|{digest[:16]}"


def _fenced(text: str) -> str:
    runs = re.findall(r"`{3,}", text)
    fence = "`" * max([3, *(len(r) + 1 for r in runs)])
    return f"{fence}\n{text}{'' if text.endswith(chr(10)) else chr(10)}{fence}"
