"""The coder agent: takes code steps and commits patches in git worktrees of the target repo.

Run as ``python -m bus.runner agents.coder``; any number of replicas share
``<prefix>.work.coder``. Each step is :meth:`tasks.coder.StepCoder.run`: a worktree under
``SOPHIA_HOME`` (never the user's working tree), SEARCH/REPLACE edits from the model applied
all or nothing, syntax and ruff checks before and after, exactly one commit per step even
when a coder dies mid-step and the step is redelivered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bus import Agent, tracing, work
from bus.config import Settings
from bus.schemas.tasks import CodeItem
from tasks.config import load_tasks

if TYPE_CHECKING:
    from tasks.coder import StepCoder


class CoderAgent(Agent, name="coder"):
    """Takes code steps and commits patches in git worktrees of the target repo."""

    coder: StepCoder

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self.task_settings = load_tasks()

    async def setup(self) -> None:
        from tasks.coder import StepCoder
        from tasks.store import TaskStore
        from tasks.worktree import Worktrees

        store = await TaskStore.open(self.bus)
        worktrees = Worktrees(self.settings.home_path)
        self.coder = StepCoder(self.bus, store, self.task_settings, worktrees, self.id)

    @work
    async def code(self, item: CodeItem) -> None:
        tracing.tag_task(item.task_id)
        await self.coder.run(item)

    async def work_dead_lettered(self, item: CodeItem, error: str, code: int) -> None:
        """A code step's item went to the DLQ: its attempt is reported failed."""
        await self.coder.dead_lettered(item, error, code)


if __name__ == "__main__":
    from bus.runner import run_agent

    run_agent(CoderAgent)
