"""Settings of tasks, from ``SOPHIA_TASKS_<FIELD>`` variables or ``[tasks]`` in sophia.toml.

Each field states its bounds, so a bad value stops the agent at start with the variable's
name (``bus.config.load``).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from bus.config import Seconds, load

Rounds = Annotated[int, msgspec.Meta(ge=0, le=20)]
Chars = Annotated[int, msgspec.Meta(ge=1_000, le=1_000_000)]


class TaskSettings(msgspec.Struct, kw_only=True, frozen=True):
    tasks_max_rounds: Rounds = 2  # review or step rounds that may ask for changes
    tasks_edit_retries: Annotated[int, msgspec.Meta(ge=0, le=5)] = 2  # failed blocks re-asked
    tasks_lint_retries: Annotated[int, msgspec.Meta(ge=0, le=5)] = 1  # new lint errors re-asked
    tasks_call_timeout_s: Seconds = 600.0  # one model call at most
    tasks_index_timeout_s: Seconds = 300.0  # indexing the repository on first use
    tasks_test_timeout_s: Seconds = 300.0  # the repository's own tests
    tasks_run_tests: bool = True
    tasks_test_python: str = ""  # the interpreter the repo's tests run with; "": Sophia's own
    tasks_context_items: Annotated[int, msgspec.Meta(ge=0, le=50)] = 6
    tasks_review_chars: Chars = 24_000  # diff characters per reviewer call (more: split)
    tasks_file_chars: Chars = 40_000  # file contents per coder prompt
    tasks_max_tokens: Annotated[int, msgspec.Meta(ge=256, le=200_000)] = 4096


def load_tasks() -> TaskSettings:
    """Raises ConfigError naming the variable."""
    return load(TaskSettings, section="tasks")
