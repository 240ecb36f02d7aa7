"""The reviewer agent: reviews patches with real tools (ruff, bandit, the repo's tests) and an LLM.

Run as ``python -m agents.reviewer``. Its work arrives in later issues; today it
registers its micro service and answers ``health`` with its real state.
"""

from __future__ import annotations

from bus import Agent
from bus.runner import run_agent


class ReviewerAgent(Agent, name="reviewer"):
    """Reviews patches with real tools (ruff, bandit, the repo's tests) and an LLM."""


if __name__ == "__main__":
    run_agent(ReviewerAgent)
