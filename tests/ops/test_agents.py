"""Agents are found, not listed: each public module of a package is one agent.

Each test writes a throwaway package (the ``package`` fixture) and points discovery at it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bus.errors import ConfigError
from ops import cli, stack
from ops.stack import agent_modules
from tests.ops.conftest import Package, agent_source


def test_agent_modules_finds_each_module_agent_and_skips_helpers(package: Package) -> None:
    name = package(
        {
            "scout": agent_source("scout"),
            "tester": agent_source("tester"),
            "_shared": "VALUE = 1\n",
            # importing another module's agent is allowed: only the one it defines counts
            "borrower": "from PKG.scout import TestAgent  # noqa: F401\n"
            + agent_source("third", "Own"),
        }
    )
    assert agent_modules(name) == {
        "scout": f"{name}.scout",
        "tester": f"{name}.tester",
        "third": f"{name}.borrower",
    }


def test_the_agents_package_has_the_documented_agents() -> None:
    found = agent_modules()
    assert {"tasks", "coder", "reviewer", "memory", "infra", "llm"} <= set(found)
    assert found["memory"] == "agents.memory"


@pytest.mark.parametrize(
    ("modules", "message"),
    [
        ({"empty": "VALUE = 1\n"}, "{pkg}.empty: defines no Agent subclass"),
        (
            {"pair": agent_source("one", "One") + agent_source("two", "Two")},
            "{pkg}.pair: defines 2 Agent subclasses (One, Two); one module runs one agent",
        ),
        (
            {"broken": "import no_such_module_here\n"},
            "{pkg}.broken: cannot be imported (ModuleNotFoundError: "
            "No module named 'no_such_module_here')",
        ),
        (
            {"a": agent_source("same"), "b": agent_source("same")},
            "{pkg}.b: agent name 'same' is taken by {pkg}.a",
        ),
        (
            {"gate": agent_source("edge")},
            "{pkg}.gate: agent name 'edge' is taken by the stack itself",
        ),
        (
            {"dotted": agent_source("a.b")},
            "{pkg}.dotted: its agent name must be letters, digits, '_' or '-'",
        ),
    ],
    ids=["no-agent", "two-agents", "import-fails", "same-name", "reserved-name", "bad-name"],
)
def test_agent_modules_names_the_module_and_what_is_wrong(
    package: Package, modules: dict[str, str], message: str
) -> None:
    name = package(modules)
    with pytest.raises(ConfigError) as caught:
        agent_modules(name)
    assert caught.value.description == message.format(pkg=name)


def test_sophia_up_stops_with_one_line_for_a_module_without_an_agent(
    package: Package,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    name = package({"scout": agent_source("scout"), "notes": "TEXT = 'not an agent'\n"})
    monkeypatch.setattr(stack, "AGENTS_PACKAGE", name)
    monkeypatch.setenv("SOPHIA_HOME", str(tmp_path / "home"))
    status = cli.main(["up", "--only", "scout"])
    out, err = capsys.readouterr()
    assert status == 2
    assert err == f"sophia: {name}.notes: defines no Agent subclass\n"
    assert out == ""
    assert not (tmp_path / "home").exists()  # nothing was started


def test_runner_module_entry_refuses_a_module_without_an_agent(
    package: Package, tmp_path: Path
) -> None:
    name = package({"notes": "TEXT = 'not an agent'\n"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    run = subprocess.run(
        [sys.executable, "-m", "bus.runner", f"{name}.notes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert run.stderr == f"sophia runner: {name}.notes: defines no Agent subclass\n"
