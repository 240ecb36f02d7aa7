"""Progress reports an agent sends to a request's ``progress_subject``: one tagged union.

Each member carries ``"type"`` (msgspec's tag), so a reader decodes the union once and
``match``-es on the class; a new kind of progress is a new member with a tag of its own.
"""

from __future__ import annotations

from bus.schemas.edge import CallProgress
from bus.schemas.memory import IndexProgress
from bus.schemas.tasks import TaskProgress

Progress = CallProgress | IndexProgress | TaskProgress


def as_notification(report: Progress) -> tuple[float, float | None, str | None]:
    """(progress, total, message) as MCP's ``notifications/progress`` carries them."""
    match report:
        case CallProgress():
            return report.progress, report.total or None, report.message or None
        case IndexProgress():
            return float(report.done), float(report.total) or None, report.path or None
        case TaskProgress():
            message = f"{report.message} (${report.cost_usd:.4f})"
            return float(report.done_steps), float(report.total_steps) or None, message
