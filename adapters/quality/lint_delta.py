"""What an edit broke: the problems a coder's change brought into the files it changed.

:func:`new_problems` gives, for the changed ``.py`` files still present:

- every syntax error, found in process with ``compile()`` (nothing is executed), as
  ``syntax-N`` records (tool ``python``, severity ``high``), message with the line;
- the ruff findings present after the edit but not before, compared per file as a multiset
  of (code, message), not by line, since lines move with an edit. Ruff's own syntax errors are
  left out (the ``compile()`` ones say it). Ruff runs on the content before the edit through
  stdin (``--stdin-filename``), so nothing is written into the tree; a new file (``None``
  before) has every finding new.

Non-``.py`` files and deleted files are skipped. When ruff cannot run, the syntax errors are
still returned and the failure is logged (``lint_delta_ruff_failed``).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import anyio

from adapters.quality.sandbox import clean_env, run_bounded, tail_text
from adapters.quality.tools import (
    RUFF_SYNTAX,
    python_files,
    ruff_argv,
    ruff_records,
    run_ruff,
)
from bus.schemas.tasks import ToolFindingRecord, ToolRunRecord

log = logging.getLogger("sophia.quality")

RUFF_TIMEOUT_S = 60.0
#: ruff runs on this many "before" contents at once
CONCURRENCY = 4


def syntax_error(path: str, source: bytes) -> ToolFindingRecord | None:
    """The first syntax error of ``source`` (compiled, never run), or None."""
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        line = exc.lineno or 0
        return ToolFindingRecord(
            id="",
            tool="python",
            file=path,
            line=line,
            code="syntax",
            message=f"line {line}: {exc.msg}",
            severity="high",
        )
    except ValueError as exc:  # e.g. a null byte in the source
        return ToolFindingRecord(
            id="",
            tool="python",
            file=path,
            line=0,
            code="syntax",
            message=f"line 0: {exc}",
            severity="high",
        )
    return None


def _syntax_errors(root: Path, files: list[str]) -> list[ToolFindingRecord]:
    found = []
    for path in files:
        try:
            source = (root / path).read_bytes()
        except OSError:
            continue
        error = syntax_error(path, source)
        if error is not None:
            found.append(error)
    return found


async def _ruff_before(
    root: Path, argv: list[str], path: str, content: str, limiter: anyio.CapacityLimiter
) -> Counter[tuple[str, str]] | None:
    """(code, message) counts of ``content`` as ``path``, or None when ruff failed."""
    async with limiter:
        try:
            done = await run_bounded(
                [*argv, "--stdin-filename", path, "-"],
                cwd=root,
                timeout_s=RUFF_TIMEOUT_S,
                env=clean_env(),
                stdin=content.encode("utf-8", errors="surrogateescape"),
            )
        except OSError as exc:
            log.warning("lint_delta_ruff_failed", extra={"file": path, "error": str(exc)})
            return None
    if done.timed_out or done.returncode != 0 or done.truncated:
        log.warning(
            "lint_delta_ruff_failed",
            extra={"file": path, "returncode": done.returncode, "error": tail_text(done.stderr)},
        )
        return None
    try:
        items = json.loads(done.stdout.decode("utf-8", errors="replace") or "[]")
        records = ruff_records(root, list(items))
    except (ValueError, TypeError, AttributeError) as exc:
        log.warning("lint_delta_ruff_failed", extra={"file": path, "error": str(exc)})
        return None
    return Counter((r.code, r.message) for r in records if r.code != RUFF_SYNTAX)


async def new_problems(root: Path, before: Mapping[str, str | None]) -> list[ToolFindingRecord]:
    """Syntax errors of the changed ``.py`` files, then the ruff findings the edit added
    (``before`` maps each changed file, relative to ``root``, to its content before the edit,
    None for a new file). Ids: ``syntax-N`` and the ids of the after-edit ruff run."""
    root = Path(root)
    by_path: dict[str, str | None] = {}
    for name, content in before.items():
        for path in python_files(root, [name]):  # normalised; [] unless an existing .py file
            by_path[path] = content
    files = sorted(by_path)

    syntax = await anyio.to_thread.run_sync(_syntax_errors, root, files)
    for i, record in enumerate(syntax, 1):
        record.id = f"syntax-{i}"
    if not files:
        return syntax

    argv = ruff_argv(root, files)
    if argv is None:
        log.warning("lint_delta_ruff_failed", extra={"note": "ruff is not installed"})
        return syntax
    counts: dict[str, Counter[tuple[str, str]] | None] = {}
    runs: list[ToolRunRecord] = []
    limiter = anyio.CapacityLimiter(CONCURRENCY)

    async def count(path: str, content: str) -> None:
        counts[path] = await _ruff_before(root, argv, path, content, limiter)

    async def lint_after() -> None:
        runs.append(await run_ruff(root, files, timeout_s=RUFF_TIMEOUT_S))

    async with anyio.create_task_group() as tg:  # before and after side by side
        tg.start_soon(lint_after)
        for path, content in by_path.items():
            if content is not None:
                tg.start_soon(count, path, content)
    after = runs[0]
    if not after.ran or (not after.ok and not after.findings):
        log.warning("lint_delta_ruff_failed", extra={"note": after.note})
        return syntax

    added: list[ToolFindingRecord] = []
    seen: Counter[tuple[str, str, str]] = Counter()
    for record in after.findings:
        if record.code == RUFF_SYNTAX:
            continue
        prior = counts.get(record.file, Counter())
        if prior is None:  # ruff failed on the old content: nothing to compare with
            continue
        key = (record.code, record.message)
        seen[(record.file, *key)] += 1
        if seen[(record.file, *key)] > prior[key]:
            added.append(record)
    return syntax + added
