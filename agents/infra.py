"""The infra agent: previews and applies infrastructure changes through Pulumi's Automation API.

Run as ``python -m agents.infra``. Its work arrives in later issues; today it
registers its micro service and answers ``health`` with its real state.
"""

from __future__ import annotations

from bus import Agent
from bus.runner import run_agent


class InfraAgent(Agent, name="infra"):
    """Previews and applies infrastructure changes through Pulumi's Automation API."""


if __name__ == "__main__":
    run_agent(InfraAgent)
