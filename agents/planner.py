"""The planner agent: turns a task into a plan: a DAG of steps, each for one capability.

Run as ``python -m agents.planner``. Its work arrives in later issues; today it
registers its micro service and answers ``health`` with its real state.
"""

from __future__ import annotations

from bus import Agent
from bus.runner import run_agent


class PlannerAgent(Agent, name="planner"):
    """Turns a task into a plan: a DAG of steps, each for one capability."""


if __name__ == "__main__":
    run_agent(PlannerAgent)
