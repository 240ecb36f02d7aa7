"""What a finished task leaves in memory, so the next similar task plans with it.

On ``done`` a ``solution`` item: the goal, the plan, the patch summary and the review verdict;
on ``failed`` or ``cancelled`` an ``error`` item: the goal, the reason and the last findings.
Findings that a later round fixed become an ``error`` item each way: what was met and how
it was fixed. All go to the repository's namespace (the memory agent redacts secrets first)
with ``task_id`` and ``outcome`` in their metadata.
"""

from __future__ import annotations

from bus.client import Bus
from bus.schemas import memory as m
from bus.schemas.tasks import Finding, TaskRecord

STORE_TIMEOUT_S = 20.0
MAX_TEXT = 8_000


def _findings(findings: list[Finding], limit: int = 10) -> list[str]:
    return [f"- {f.file}:{f.line} {f.message}" for f in findings[:limit]]


def outcome_items(record: TaskRecord) -> list[tuple[m.Kind, str]]:
    """(kind, text) of each item a finished task leaves."""
    steps = [f"- {s.id} ({s.capability}, {s.state}): {s.description}" for s in record.plan]
    stats = [
        c.diff_stat.strip().splitlines()[-1]
        for s in record.plan
        for c in s.candidates
        if c.diff_stat.strip()
    ]
    head = [f"Task goal: {record.goal}", f"Pattern: {record.pattern}", "Plan:", *steps]
    items: list[tuple[m.Kind, str]] = []
    if record.state == "done":
        verdict = record.review.verdict if record.review else "no review"
        body = [
            *head,
            f"Outcome: done on branch {record.branch} ({len(record.commits)} commits)",
            "Patch: " + ("; ".join(stats) or "no changes"),
            f"Review: {verdict}",
        ]
        if record.round:
            body.append(f"It took {record.round} more rounds after review findings.")
        items.append(("solution", "\n".join(body)))
    else:
        body = [
            *head,
            f"Outcome: {record.state} ({record.reason}): {record.error}",
            *(["Last findings:", *_findings(record.findings)] if record.findings else []),
        ]
        items.append(("error", "\n".join(body)))
    if record.state == "done" and record.round and record.findings:
        fixed = [
            f"Error met in task '{record.goal}':",
            *_findings(record.findings),
            f"Fixed: a coder's next round addressed them and the review accepted the patch on "
            f"{record.branch}.",
        ]
        items.append(("error", "\n".join(fixed)))
    return [(kind, text[:MAX_TEXT]) for kind, text in items]


async def remember_outcome(bus: Bus, record: TaskRecord) -> list[str]:
    """Store the outcome items; returns their ids. Raises the memory agent's SophiaError."""
    ids = []
    for kind, text in outcome_items(record):
        req = m.StoreRequest(
            text=text,
            namespace=record.namespace,
            kind=kind,
            metadata={"task_id": record.task_id, "outcome": record.state, "source": "task"},
        )
        stored = await bus.request("memory", "store", req, m.StoreResult, timeout=STORE_TIMEOUT_S)
        ids.append(stored.id)
    return ids
