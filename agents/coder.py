"""The coder agent: takes code steps and produces patches in a git worktree of the target repo.

Run as ``python -m agents.coder``. Its work arrives in later issues; today it
registers its micro service and answers ``health`` with its real state.
"""

from __future__ import annotations

from bus import Agent
from bus.runner import run_agent


class CoderAgent(Agent, name="coder"):
    """Takes code steps and produces patches in a git worktree of the target repo."""


if __name__ == "__main__":
    run_agent(CoderAgent)
