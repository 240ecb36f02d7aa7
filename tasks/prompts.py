"""The words Sophia sends to models for plans, edits and reviews.

The formats asked for are contracts (users plug in their own models): a plan is JSON named
``plan``, a review JSON named ``review`` (both as ``response_schema``), and edits are
SEARCH/REPLACE blocks as Aider taught models to write them. Every prompt is cut to a stated
number of characters per part, and says where it was cut; nothing in it comes from the
environment (the goal, files and tool output are the only inputs, and secrets are redacted
from all of them first by the callers).
"""

from __future__ import annotations

from collections.abc import Sequence

from bus.schemas.llm import Message
from bus.schemas.tasks import Finding, Step

PLAN_SYSTEM = """You are the planner of a team of coding agents working on one git repository.
Break the user's goal into a small plan: a DAG of steps, each for one capability:
"code" (edit files), "review", "research" (look something up in the project's memory),
"infra". Prefer few steps; most goals need one or two code steps. Name the files each step
will touch (paths relative to the repository root; may be empty). Answer only with JSON:
{"steps": [{"id": "s1", "capability": "code", "description": "...", "files": ["..."],
"depends_on": []}]}"""

CODE_SYSTEM = """You are an expert software engineer editing files in a git repository.
Make the change the step asks for, and nothing else. Answer with SEARCH/REPLACE blocks:

path/to/file.py
```python
<<<<<<< SEARCH
the exact current lines of the file, copied character for character
=======
the new lines
>>>>>>> REPLACE
```

Rules: the file path alone on the line before the fence; the SEARCH part must match the file
exactly once (include a few surrounding lines to make it unique); never include line numbers;
to create a file, leave SEARCH empty; use several blocks for several places. Explain nothing
outside the blocks unless asked."""

REVIEW_SYSTEM = """You are a strict code reviewer. You get a diff, the files it changes and
the results of real tools (linters, a security scan, the project's tests). Report only real
problems of the change. Every finding needs evidence: either the id of a tool finding listed
below (for example "ruff-2"), or an exact snippet quoted from the changed file at that line.
List in "covered" every changed file you reviewed. Answer only with JSON:
{"verdict": "approve" | "request_changes", "findings": [{"file": "...", "line": 1,
"severity": "low", "message": "...", "evidence": "..."}], "covered": ["..."], "pick": ""}"""

PICK_NOTE = """Two engineers (a and b) made this step independently. Review both, set "pick"
to the better one ("a" or "b"), and judge the picked one: approve it, or request changes
with findings about it."""


def _cut(text: str, limit: int, what: str) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… ({what} cut at {limit} characters)\n"


def _findings(findings: Sequence[Finding]) -> str:
    lines = []
    for f in findings:
        where = f"{f.file}:{f.line}" if f.line else f.file
        evidence = f" (evidence: {f.evidence})" if f.evidence else ""
        lines.append(f"- [{f.severity}] {where}: {f.message}{evidence}")
    return "\n".join(lines)


def plan_messages(
    goal: str, repo_map: str, lessons: Sequence[str], code: Sequence[str]
) -> list[Message]:
    parts = [f"Goal: {goal}", "", "Repository map:", _cut(repo_map, 8_000, "map")]
    if lessons:
        parts += ["", "Lessons from earlier tasks in this repository:"]
        parts += [f"- {_cut(lesson, 1_500, 'lesson')}" for lesson in lessons]
    if code:
        parts += ["", "Code that may be relevant:"]
        parts += [_cut(c, 2_000, "snippet") for c in code]
    return [
        Message(role="system", content=PLAN_SYSTEM),
        Message(role="user", content="\n".join(parts)),
    ]


def code_messages(
    goal: str,
    step: Step,
    files_text: str,
    repo_map: str,
    feedback: Sequence[Finding],
    *,
    variant: str = "",
) -> list[Message]:
    parts = [
        f"Overall goal: {goal}",
        f"This step ({step.id}): {step.description}",
        "",
        "Repository map:",
        _cut(repo_map, 6_000, "map"),
        "",
        "Files:",
        files_text or "(no file named: find the right place from the map)",
    ]
    if variant:
        parts += ["", f"You are engineer {variant} of two who make this step independently."]
    if feedback:
        parts += ["", "A reviewer asked for these changes; fix them:", _findings(feedback)]
    return [
        Message(role="system", content=CODE_SYSTEM),
        Message(role="user", content="\n".join(parts)),
    ]


def retry_message(report: str) -> Message:
    """What goes back to the model after some of its blocks failed (only those are redone)."""
    return Message(role="user", content=_cut(report, 20_000, "report"))


def lint_message(problems: str) -> Message:
    return Message(
        role="user",
        content="Your edit was applied, but it adds these problems; fix them with more "
        "SEARCH/REPLACE blocks against the files as they are now:\n"
        + _cut(problems, 8_000, "list"),
    )


def review_messages(
    goal: str,
    diff: str,
    files: Sequence[str],
    tools: str,
    *,
    part: tuple[int, int] = (1, 1),
    pick: bool = False,
) -> list[Message]:
    head = f"Goal of the change: {goal}"
    if part[1] > 1:
        head += f"\nThis is part {part[0]} of {part[1]} of the diff; review these files only."
    parts = [
        head,
        "",
        "Changed files in this part: " + ", ".join(files),
        "",
        "Tool results:",
        tools or "(no tool findings)",
        "",
        "Diff:",
        diff,
    ]
    system = REVIEW_SYSTEM + ("\n\n" + PICK_NOTE if pick else "")
    return [
        Message(role="system", content=system),
        Message(role="user", content="\n".join(parts)),
    ]
