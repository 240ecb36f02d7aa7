"""One module per agent process; each runs as ``python -m agents.<name>``."""

AGENT_NAMES = ("planner", "coder", "reviewer", "memory", "infra")
