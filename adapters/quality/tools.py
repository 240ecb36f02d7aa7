"""Ruff, bandit and semgrep on given files of a tree, as :class:`ToolRunRecord` s.

Guarantees:

- only existing ``.py`` files inside ``root`` are checked (a path that leaves ``root``, also
  through a symlink, is ignored); none left → ``ran=False`` with a note saying so;
- every tool runs as a bounded subprocess (:func:`adapters.quality.sandbox.run_bounded`) with
  ``cwd=root`` and a cleaned environment; it never writes into the tree (``--no-cache``);
- finding paths are relative to ``root``, POSIX; ids are ``<tool>-1``, ``<tool>-2``... in a
  stable order (file, line, code, column, message), so the same tree gives the same ids;
- the record's meaning: ``ran`` — the tool ran; ``ok`` — it ran to the end and found nothing;
  a tool that failed (error, timeout, unreadable output) has ``ok=False``, no findings and
  a ``note`` saying what went wrong.

Ruff honours the tree's own configuration (``ruff.toml``, ``.ruff.toml`` or a ``pyproject.toml``
with ``[tool.ruff]`` in ``root`` or between ``root`` and a checked file); without one it runs
``--isolated``, with ruff's defaults and nothing from above ``root`` or the user's config.
Semgrep runs only where it is installed, with the rules shipped beside this module
(``semgrep_rules.yml``), no metrics and no version check: nothing leaves the machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import posixpath
import shutil
import sys
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from adapters.quality.sandbox import Completed, clean_env, run_bounded, tail_text
from bus.schemas.tasks import ToolFindingRecord, ToolRunRecord

SEMGREP_RULES = Path(__file__).with_name("semgrep_rules.yml")
RUFF_CONFIGS = ("ruff.toml", ".ruff.toml")
#: ruff's syntax errors: no rule code in its JSON (older ruff) or ``invalid-syntax``
RUFF_SYNTAX = "invalid-syntax"

_BANDIT_SEVERITY = {"low": "low", "medium": "medium", "high": "high"}
_SEMGREP_SEVERITY = {"error": "high", "warning": "medium", "info": "low"}


def tool_argv(name: str) -> list[str] | None:
    """How to start a Python tool: the program beside ``sys.executable`` (this venv's), else
    ``sys.executable -m name`` when the module is importable, else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    if importlib.util.find_spec(name) is not None:
        return [sys.executable, "-m", name]
    found = shutil.which(name)
    return [found] if found else None


def relative(root: Path, path: str) -> str:
    """``path`` (absolute, or relative to ``root``) as a POSIX path relative to ``root``."""
    candidate = Path(path)
    if candidate.is_absolute():
        for base in (root, root.resolve()):
            try:
                return candidate.relative_to(base).as_posix()
            except ValueError:
                continue
        return candidate.as_posix()
    text = PurePosixPath(candidate.as_posix()).as_posix()
    while text.startswith("./"):
        text = text[2:]
    return text


def python_files(root: Path, files: Sequence[str]) -> list[str]:
    """The existing ``.py`` files among ``files`` (relative to ``root``) that are inside
    ``root`` once resolved, as sorted, unique POSIX paths relative to ``root``."""
    base = root.resolve()
    kept: set[str] = set()
    for name in files:
        name = posixpath.normpath(name.replace(os.sep, "/"))
        if not name.endswith(".py") or name.startswith(("/", "../")):
            continue
        path = root / name
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if resolved.is_relative_to(base) and resolved.is_file():
            kept.add(relative(root, name))
    return sorted(kept)


def _has_ruff_config(root: Path, files: Sequence[str]) -> bool:
    dirs = {root}
    for name in files:
        parent = (root / name).parent
        while parent != root and parent.is_relative_to(root):
            dirs.add(parent)
            parent = parent.parent
    for folder in dirs:
        if any((folder / name).is_file() for name in RUFF_CONFIGS):
            return True
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                continue
            if "ruff" in data.get("tool", {}):
                return True
    return False


def ruff_argv(root: Path, files: Sequence[str]) -> list[str] | None:
    """``ruff check`` with JSON output, no cache and exit code 0 on findings, and
    ``--isolated`` when the tree has no ruff configuration; None when ruff is not installed."""
    ruff = tool_argv("ruff")
    if ruff is None:
        return None
    argv = [*ruff, "check", "--output-format", "json", "--no-cache", "--exit-zero"]
    if not _has_ruff_config(root, files):
        argv.append("--isolated")
    return argv


def _ruff_severity(code: str) -> str:
    if code == RUFF_SYNTAX:
        return "high"
    if code[:1] in ("F", "B", "S"):
        return "medium"
    return "low"


def ruff_records(root: Path, items: list[dict[str, Any]]) -> list[ToolFindingRecord]:
    """Ruff's JSON findings as records, sorted, not yet numbered (``id`` empty)."""
    rows = []
    for item in items:
        code = item.get("code") or RUFF_SYNTAX
        location = item.get("location") or {}
        rows.append(
            (
                relative(root, str(item.get("filename", ""))),
                int(location.get("row") or 0),
                code,
                int(location.get("column") or 0),
                str(item.get("message", "")),
            )
        )
    rows.sort()
    return [
        ToolFindingRecord(
            id="",
            tool="ruff",
            file=file,
            line=line,
            code=code,
            message=message,
            severity=_ruff_severity(code),
        )
        for file, line, code, _, message in rows
    ]


def number(findings: list[ToolFindingRecord], prefix: str) -> list[ToolFindingRecord]:
    """Give ``findings`` the ids ``<prefix>-1``, ``<prefix>-2``... in their order."""
    for i, finding in enumerate(findings, 1):
        finding.id = f"{prefix}-{i}"
    return findings


def _failed(tool: str, done: Completed, what: str) -> ToolRunRecord:
    detail = tail_text(done.stderr or done.stdout, 500)
    return ToolRunRecord(
        tool=tool,
        ran=True,
        ok=False,
        note=what + (f": {detail}" if detail else ""),
        seconds=done.seconds,
    )


def _json(done: Completed) -> Any:
    """The process's stdout as JSON; ValueError when it is not (or was truncated)."""
    if done.truncated:
        raise ValueError("output over the capture bound")
    return json.loads(done.stdout.decode("utf-8", errors="replace") or "null")


async def _run(
    tool: str, argv: list[str], root: Path, timeout_s: float
) -> Completed | ToolRunRecord:
    try:
        done = await run_bounded(argv, cwd=root, timeout_s=timeout_s, env=clean_env())
    except OSError as exc:
        return ToolRunRecord(tool=tool, ran=False, ok=False, note=f"could not start {tool}: {exc}")
    if done.timed_out:
        return ToolRunRecord(
            tool=tool,
            ran=True,
            ok=False,
            note=f"{tool} timed out after {timeout_s:g}s",
            seconds=done.seconds,
        )
    return done


async def run_ruff(root: Path, files: Sequence[str], *, timeout_s: float = 60) -> ToolRunRecord:
    """Ruff on the existing ``.py`` files among ``files``: findings ``ruff-1``..."""
    root = Path(root)
    targets = python_files(root, files)
    if not targets:
        return ToolRunRecord(tool="ruff", ran=False, note="no Python files to check")
    argv = ruff_argv(root, targets)
    if argv is None:
        return ToolRunRecord(tool="ruff", ran=False, ok=False, note="ruff is not installed")
    done = await _run("ruff", [*argv, "--", *targets], root, timeout_s)
    if isinstance(done, ToolRunRecord):
        return done
    if done.returncode != 0:
        return _failed("ruff", done, f"ruff exited {done.returncode}")
    try:
        items = _json(done)
        findings = number(ruff_records(root, list(items or [])), "ruff")
    except (ValueError, TypeError, AttributeError) as exc:
        return _failed("ruff", done, f"unreadable ruff output ({exc})")
    return ToolRunRecord(
        tool="ruff",
        ran=True,
        ok=not findings,
        seconds=done.seconds,
        findings=findings,
        summary=f"{len(findings)} findings in {len(targets)} files",
    )


def as_records(
    tool: str, rows: Iterable[tuple[str, int, str, Any, str, str]]
) -> list[ToolFindingRecord]:
    """Numbered findings of ``tool`` from (file, line, code, column, message, severity) rows."""
    return number(
        [
            ToolFindingRecord(
                id="",
                tool=tool,
                file=file,
                line=line,
                code=code,
                message=message,
                severity=severity,
            )
            for file, line, code, _, message, severity in rows
        ],
        tool,
    )


async def run_bandit(root: Path, files: Sequence[str], *, timeout_s: float = 120) -> ToolRunRecord:
    """Bandit on the existing ``.py`` files among ``files``: findings ``bandit-1``..., their
    severity bandit's ``issue_severity`` lower-cased (``undefined`` → ``info``)."""
    root = Path(root)
    targets = python_files(root, files)
    if not targets:
        return ToolRunRecord(tool="bandit", ran=False, note="no Python files to check")
    bandit = tool_argv("bandit")
    if bandit is None:
        return ToolRunRecord(tool="bandit", ran=False, ok=False, note="bandit is not installed")
    done = await _run("bandit", [*bandit, "-f", "json", "-q", "--", *targets], root, timeout_s)
    if isinstance(done, ToolRunRecord):
        return done
    try:
        data = _json(done)
        results = list(data["results"])
        errors = list(data.get("errors") or [])
        rows = sorted(
            (
                relative(root, str(r.get("filename", ""))),
                int(r.get("line_number") or 0),
                str(r.get("test_id", "")),
                int(r.get("col_offset") or 0),
                str(r.get("issue_text", "")),
                _BANDIT_SEVERITY.get(str(r.get("issue_severity", "")).lower(), "info"),
            )
            for r in results
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return _failed("bandit", done, f"bandit exited {done.returncode} ({exc})")
    findings = as_records("bandit", rows)
    note = "; ".join(
        f"not scanned: {relative(root, str(e.get('filename', '')))}: {e.get('reason', '')}"
        for e in errors
        if isinstance(e, dict)
    )
    return ToolRunRecord(
        tool="bandit",
        ran=True,
        ok=not findings and not errors,
        note=note,
        seconds=done.seconds,
        findings=findings,
        summary=f"{len(findings)} findings in {len(targets)} files",
    )


async def run_semgrep(
    root: Path, files: Sequence[str], *, timeout_s: float = 180, rules: Path = SEMGREP_RULES
) -> ToolRunRecord:
    """Semgrep with the local ``rules`` only (never the registry), where semgrep is installed:
    findings ``semgrep-1``... with the rule's id as code."""
    root = Path(root)
    semgrep = shutil.which("semgrep")
    if semgrep is None:
        return ToolRunRecord(tool="semgrep", ran=False, note="semgrep is not installed")
    targets = python_files(root, files)
    if not targets:
        return ToolRunRecord(tool="semgrep", ran=False, note="no Python files to check")
    argv = [
        semgrep,
        "scan",
        "--metrics=off",
        "--disable-version-check",
        "--json",
        "--quiet",
        "--config",
        str(rules),
        "--",
        *targets,
    ]
    done = await _run("semgrep", argv, root, timeout_s)
    if isinstance(done, ToolRunRecord):
        return done
    try:
        data = _json(done)
        results = list(data["results"])
        errors = [e for e in data.get("errors") or [] if isinstance(e, dict)]
        rows = sorted(
            (
                relative(root, str(r.get("path", ""))),
                int((r.get("start") or {}).get("line") or 0),
                str(r.get("check_id", "")).rsplit(".", 1)[-1],
                int((r.get("start") or {}).get("col") or 0),
                str((r.get("extra") or {}).get("message", "")).strip(),
                _SEMGREP_SEVERITY.get(
                    str((r.get("extra") or {}).get("severity", "")).lower(), "medium"
                ),
            )
            for r in results
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return _failed("semgrep", done, f"semgrep exited {done.returncode} ({exc})")
    if done.returncode not in (0, 1) and not results:
        return _failed("semgrep", done, f"semgrep exited {done.returncode}")
    findings = as_records("semgrep", rows)
    note = "; ".join(str(e.get("message", e.get("type", "error")))[:300] for e in errors[:5])
    return ToolRunRecord(
        tool="semgrep",
        ran=True,
        ok=not findings and not errors,
        note=note,
        seconds=done.seconds,
        findings=findings,
        summary=f"{len(findings)} findings in {len(targets)} files",
    )
