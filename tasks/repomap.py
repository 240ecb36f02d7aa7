"""Context for the coder's prompt: a map of a repository's symbols, and files' contents.

Guarantees:

* Nothing outside ``root`` is read: every path is resolved (symlinks followed) and must stay
  inside the resolved root; files over :data:`MAX_FILE_BYTES`, binary files (a NUL byte in
  the first :data:`SNIFF_BYTES`) and anything that is not a regular file are skipped.
* Nothing is executed or imported: Python files are only parsed (:mod:`ast`); a file that
  does not parse is listed by its path alone.
* Budgets are kept and cuts are never silent. :func:`repo_map` stays within ``max_chars``
  (when ``max_chars`` can hold its closing line), never cuts a line, and ends with
  ``… N more files`` when files were left out. :func:`read_files` stays within ``max_chars``
  except for one closing note naming the files it left out; a file cut short says so.
* The output depends only on the files: paths are sorted (focus files first, in the order
  given), so the same tree gives the same text.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

MAX_FILE_BYTES = 1_000_000
SNIFF_BYTES = 8192
#: directories a walk never enters (hidden ones, starting with ".", are skipped too)
SKIP_DIRS = frozenset(
    {"node_modules", "__pycache__", "venv", "env", "site-packages", ".git", ".venv"}
)
_INDENT = "  "
#: read_files does not start a cut file when less room than this is left
_MIN_PART = 200


def repo_map(
    root: Path,
    *,
    max_chars: int = 6000,
    focus: Sequence[str] = (),
    files: Sequence[str] | None = None,
) -> str:
    """A compact map of the repository's files and, for Python, their classes and functions.

    One line per file (its path relative to ``root``), then indented ``class Name`` and
    ``def name(args)`` lines for top-level classes and functions and the methods of
    top-level classes. ``files`` lists the paths to map (``git ls-files``, say); without it
    the tree is walked, skipping hidden directories, virtual environments, ``node_modules``
    and ``__pycache__``. ``focus`` files come first, with full signatures (annotations,
    defaults, return types, base classes); the others give argument names only and are left
    out, whole, once ``max_chars`` is reached.
    """
    base = _resolved(root)
    if base is None:
        return ""
    focus_set = []
    for raw in focus:
        rel = _relative(base, raw)
        if rel is not None and rel not in focus_set and _readable(base, rel):
            focus_set.append(rel)
    candidates = _listed(base, files) if files is not None else _walk(base)
    rest = sorted({p for p in candidates if p not in focus_set})
    entries = [(p, True) for p in focus_set] + [(p, False) for p in rest]
    blocks: list[list[str]] = []
    total = 0
    for rel, full in entries:  # parse only as far as the budget can reach
        block = _block(base, rel, full=full)
        blocks.append(block)
        total += sum(len(line) + 1 for line in block)
        if total > max_chars:
            break
    return _fit(blocks, len(entries), len(focus_set), max_chars)


def read_files(
    root: Path, paths: Sequence[str], *, max_chars: int = 40000
) -> tuple[str, list[str]]:
    """The content of each named file as ``path``, a fenced block, in the order given.

    Paths outside ``root``, missing, over :data:`MAX_FILE_BYTES`, or binary are skipped (they
    are absent from the returned list). Returns ``(text, paths included)``. When the budget
    runs out, the file that crosses it is cut at a line end with a note saying how many lines
    were left out, and every later file is named in a closing note instead of its content.
    """
    base = _resolved(root)
    if base is None:
        return "", []
    parts: list[str] = []
    included: list[str] = []
    left_out: list[str] = []
    used = 0
    spent = False
    seen: set[str] = set()
    for raw in paths:
        rel = _relative(base, raw)
        if rel is None or rel in seen:
            continue
        seen.add(rel)
        content = _text(base, rel)
        if content is None:
            continue
        if spent:
            left_out.append(rel)
            continue
        block = _fenced(rel, content)
        if used + len(block) <= max_chars:
            parts.append(block)
            included.append(rel)
            used += len(block)
            continue
        spent = True
        cut = _cut_block(rel, content, max_chars - used)
        if cut is None:
            left_out.append(rel)
            continue
        parts.append(cut)
        included.append(rel)
        used += len(cut)
    if left_out:
        names = ", ".join(left_out)
        parts.append(f"[{len(left_out)} more files left out, over the budget: {names}]\n")
    return "".join(parts), included


def _resolved(root: Path) -> Path | None:
    try:
        base = Path(root).resolve()
    except OSError:
        return None
    return base if base.is_dir() else None


def _relative(base: Path, raw: str) -> str | None:
    """``raw`` as a clean posix path relative to ``base``, or None when it leaves ``base``."""
    if not raw or "\x00" in raw:
        return None
    candidate = Path(raw) if Path(raw).is_absolute() else base / raw
    try:
        real = candidate.resolve()
    except OSError:
        return None
    if not real.is_relative_to(base):
        return None
    try:
        lexical = Path(os.path.normpath(candidate)).relative_to(base)
    except ValueError:
        lexical = real.relative_to(base)
    rel = PurePosixPath(lexical).as_posix()
    return None if rel in ("", ".") else rel


def _readable(base: Path, rel: str) -> bool:
    return _sniff(base / rel, head_only=True) is not None


def _sniff(path: Path, *, head_only: bool = False) -> bytes | None:
    """The file's bytes (or its first :data:`SNIFF_BYTES`) when it is a regular text file
    within the size limit, else None."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
            return None
        with path.open("rb") as handle:
            data = handle.read(SNIFF_BYTES if head_only else MAX_FILE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_FILE_BYTES or b"\x00" in data[:SNIFF_BYTES]:
        return None
    return data


def _text(base: Path, rel: str) -> str | None:
    data = _sniff(base / rel)
    return None if data is None else data.decode("utf-8", "replace")


def _listed(base: Path, files: Sequence[str]) -> Iterator[str]:
    for raw in files:
        rel = _relative(base, raw)
        if rel is not None and not _skipped_dir(PurePosixPath(rel).parts[:-1]):
            if _readable(base, rel):
                yield rel


def _skipped_dir(parts: Sequence[str]) -> bool:
    return any(part in SKIP_DIRS for part in parts)


def _walk(base: Path) -> Iterator[str]:
    for top, dirs, names in os.walk(base):
        here = Path(top)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and d not in SKIP_DIRS
            and not (here / d / "pyvenv.cfg").exists()
            and not (here / d).is_symlink()
        )
        for name in sorted(names):
            if name.startswith("."):
                continue
            rel = _relative(base, str((here / name).relative_to(base)))
            if rel is not None and _readable(base, rel):
                yield rel


def _block(base: Path, rel: str, *, full: bool) -> list[str]:
    lines = [rel]
    if rel.endswith((".py", ".pyi")):
        source = _text(base, rel)
        if source is not None:
            lines += _symbols(source, full=full)
    return lines


def _symbols(source: str, *, full: bool) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    lines: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            lines.append(_INDENT + _class_line(node, full=full))
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines.append(_INDENT * 2 + _def_line(item, full=full))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines.append(_INDENT + _def_line(node, full=full))
    return lines


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _class_line(node: ast.ClassDef, *, full: bool) -> str:
    if not full or not (node.bases or node.keywords):
        return f"class {node.name}"
    bases = [ast.unparse(b) for b in node.bases]
    bases += [
        f"{k.arg}={ast.unparse(k.value)}" if k.arg else f"**{ast.unparse(k.value)}"
        for k in node.keywords
    ]
    return _one_line(f"class {node.name}({', '.join(bases)})")


def _def_line(node: ast.FunctionDef | ast.AsyncFunctionDef, *, full: bool) -> str:
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    if full:
        returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
        return _one_line(f"{prefix} {node.name}({ast.unparse(node.args)}){returns}")
    return f"{prefix} {node.name}({', '.join(_arg_names(node.args))})"


def _arg_names(args: ast.arguments) -> list[str]:
    names = [a.arg for a in args.posonlyargs]
    if args.posonlyargs:
        names.append("/")
    names += [a.arg for a in args.args]
    if args.vararg is not None:
        names.append("*" + args.vararg.arg)
    elif args.kwonlyargs:
        names.append("*")
    names += [a.arg for a in args.kwonlyargs]
    if args.kwarg is not None:
        names.append("**" + args.kwarg.arg)
    return names


def _fit(blocks: list[list[str]], n_files: int, n_focus: int, max_chars: int) -> str:
    """The blocks' lines within ``max_chars``; focus blocks may be cut between lines.

    ``blocks`` are the first of ``n_files`` files' blocks: all of them, or enough to pass
    ``max_chars``.
    """
    texts = ["".join(line + "\n" for line in block) for block in blocks]
    if len(blocks) == n_files and sum(len(t) for t in texts) <= max_chars:
        return "".join(texts)
    budget = max_chars - len(f"… {n_files} more files\n")
    out: list[str] = []
    used = 0
    shown = 0
    for index, (block, text) in enumerate(zip(blocks, texts, strict=True)):
        if used + len(text) <= budget:
            out.append(text)
            used += len(text)
            shown += 1
            continue
        if index < n_focus:  # a focus file shows what fits of it, line by line
            taken = 0
            for line in block:
                if used + len(line) + 1 > budget:
                    break
                out.append(line + "\n")
                used += len(line) + 1
                taken += 1
            if taken:
                shown += 1
                continue
        break
    out.append(f"… {n_files - shown} more files\n")
    return "".join(out)


def _fence_for(content: str) -> str:
    fence = "```"
    while fence in content:
        fence += "`"
    return fence


def _fenced(rel: str, content: str) -> str:
    body = content[:-1] if content.endswith("\n") else content
    fence = _fence_for(body)
    return f"{rel}\n{fence}\n{body}\n{fence}\n"


def _cut_block(rel: str, content: str, room: int) -> str | None:
    """``rel``'s block cut at a line end to fit ``room`` with its note, or None if too small."""
    if room < _MIN_PART:
        return None
    body = content[:-1] if content.endswith("\n") else content
    fence = _fence_for(body)
    total_lines = body.count("\n") + 1
    note_room = len(f"[{rel}: cut here, {total_lines} of {total_lines} lines shown]\n")
    overhead = len(rel) + 2 * len(fence) + 4 + note_room
    keep = room - overhead
    if keep <= 0:
        return None
    head = body[:keep]
    if "\n" in head:  # cut at a line end; a single long first line is cut inside it
        head = head[: head.rindex("\n")]
    shown = head.count("\n") + 1
    note = f"[{rel}: cut here, {shown} of {total_lines} lines shown]\n"
    return f"{rel}\n{fence}\n{head}\n{fence}\n{note}"
