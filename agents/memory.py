"""The memory agent: keeps coding context across sessions in four tiers and finds it by meaning.

Run as ``python -m agents.memory``. Its work arrives in later issues; today it
registers its micro service and answers ``health`` with its real state.
"""

from __future__ import annotations

from bus import Agent
from bus.runner import run_agent


class MemoryAgent(Agent, name="memory"):
    """Keeps coding context across sessions in four tiers and finds it by meaning."""


if __name__ == "__main__":
    run_agent(MemoryAgent)
