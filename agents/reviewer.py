"""The reviewer agent: runs real tools and a model review on a task's patch, with evidence.

Run as ``python -m bus.runner agents.reviewer``; any number of replicas share
``<prefix>.work.reviewer``. Each review is :meth:`tasks.reviewer.StepReviewer.run`: ruff,
bandit, semgrep where installed and the repository's own tests (sandboxed: no network where
``unshare -rn`` works, no secrets), then the model; findings without evidence are dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bus import Agent, tracing, work
from bus.config import Settings
from bus.schemas.tasks import ReviewItem
from tasks.config import load_tasks

if TYPE_CHECKING:
    from tasks.reviewer import StepReviewer


class ReviewerAgent(Agent, name="reviewer"):
    """Runs real tools and a model review on a task's patch; findings must cite evidence."""

    reviewer: StepReviewer

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self.task_settings = load_tasks()

    async def setup(self) -> None:
        from tasks.reviewer import StepReviewer
        from tasks.store import TaskStore
        from tasks.worktree import Worktrees

        store = await TaskStore.open(self.bus)
        worktrees = Worktrees(self.settings.home_path)
        self.reviewer = StepReviewer(self.bus, store, self.task_settings, worktrees)

    @work
    async def review(self, item: ReviewItem) -> None:
        tracing.tag_task(item.task_id)
        await self.reviewer.run(item)

    async def work_dead_lettered(self, item: ReviewItem, error: str, code: int) -> None:
        """A review step's item went to the DLQ: its attempt is reported failed."""
        await self.reviewer.dead_lettered(item, error, code)


if __name__ == "__main__":
    from bus.runner import run_agent

    run_agent(ReviewerAgent)
