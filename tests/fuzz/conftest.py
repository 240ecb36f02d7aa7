"""Fixtures of the fuzz suite: one stack for the whole package, the run's tally and figure.

``SOPHIA_FUZZ_EXAMPLES`` sets the examples per endpoint and kind of input (default
:data:`CI_EXAMPLES`, with Hypothesis derandomized: the same inputs every run, as CI needs);
any other value draws fresh inputs (``--hypothesis-seed=N`` repeats one such run). The figure
line of the run is printed in pytest's terminal summary.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings

from ops.natsserver import NatsServer
from tests.fixtures.openai_upstream import serving
from tests.fuzz.inputs import Places
from tests.fuzz.stack import Stack, stack_running
from tests.fuzz.targets import Target, declared, published
from tests.fuzz.verdicts import Tally, Writes

CI_EXAMPLES = 1
_TALLY = Tally()


def examples() -> int:
    return int(os.environ.get("SOPHIA_FUZZ_EXAMPLES", CI_EXAMPLES))


def fixed_inputs() -> bool:
    """CI's run: the default count, derandomized."""
    return "SOPHIA_FUZZ_EXAMPLES" not in os.environ


def fuzz_settings(count: int) -> settings:
    """Hypothesis settings for one endpoint's run of ``count`` examples: no deadline (the
    stack is shared with the rest of the machine), no shrinking (every input is judged and
    counted; a violation names its input), no example database."""
    return settings(
        max_examples=max(1, count),
        deadline=None,
        database=None,
        derandomize=fixed_inputs(),
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
            HealthCheck.function_scoped_fixture,  # `writes` collects across the examples
        ],
    )


@pytest.fixture(scope="package")
def stack(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with (
        serving(record=False) as upstream,
        stack_running(nats_server.url, tmp_path_factory.mktemp("fuzz"), upstream) as running,
    ):
        yield running


@pytest.fixture(scope="package")
def targets(stack: Stack) -> dict[str, Target]:
    """Every declared endpoint as it publishes itself; waits until all are seen."""
    wanted = {d.id for d in declared()}
    found = stack.call(published, stack.nc, stack.settings.prefix)
    assert wanted <= set(found), f"not published: {sorted(wanted - set(found))}"
    return found


@pytest.fixture(scope="package")
def places(stack: Stack) -> Places:
    return Places(stack.repo, stack.plain_dir, Path(stack.plain_dir, "missing", "nothing"))


@pytest.fixture(scope="session")
def tally() -> Tally:
    return _TALLY


@pytest.fixture
def writes() -> Writes:
    return Writes()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _TALLY.by_channel:
        terminalreporter.write_line(json.dumps(_TALLY.figure()))
