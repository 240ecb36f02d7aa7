"""Configuration: env over sophia.toml, and one clear line for each bad value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bus.config import Settings, load
from bus.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_config_defaults_match_the_design() -> None:
    settings = load(Settings, {"HOME": "/home/u"})
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert settings.edge_bind == "127.0.0.1:8420"
    assert settings.prefix == "sophia"
    assert settings.home.endswith("/sophia")


def test_config_reads_environment_and_converts_types() -> None:
    env = {"SOPHIA_WORK_BATCH": "8", "SOPHIA_DRAIN_GRACE_S": "2.5", "SOPHIA_PREFIX": "acme"}
    settings = load(Settings, env)
    assert (settings.work_batch, settings.drain_grace_s, settings.prefix) == (8, 2.5, "acme")


def test_config_environment_wins_over_toml(tmp_path: Path) -> None:
    toml = tmp_path / "sophia.toml"
    toml.write_text('prefix = "fromfile"\nwork_batch = 4\n')
    settings = load(Settings, {"SOPHIA_CONFIG": str(toml), "SOPHIA_PREFIX": "fromenv"})
    assert (settings.prefix, settings.work_batch) == ("fromenv", 4)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SOPHIA_WORK_BATCH": "lots"}, "SOPHIA_WORK_BATCH: Expected `int`, got `str`"),
        ({"SOPHIA_WORK_BATCH": "0"}, "SOPHIA_WORK_BATCH: must be a whole number of at least 1"),
        ({"SOPHIA_PREFIX": "a.b"}, "SOPHIA_PREFIX: must be one subject token"),
        ({"SOPHIA_EDGE_BIND": "8420"}, "SOPHIA_EDGE_BIND: must be HOST:PORT"),
        ({"SOPHIA_NATS_URL": "http://x"}, "SOPHIA_NATS_URL: must start with nats://"),
        ({"SOPHIA_LOG_LEVEL": "loud"}, "SOPHIA_LOG_LEVEL: must be one of debug"),
    ],
    ids=["not-a-number", "too-small", "dotted-prefix", "no-host", "wrong-scheme", "bad-level"],
)
def test_config_bad_value_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(Settings, env)
    assert caught.value.description.startswith(message)
    assert "\n" not in caught.value.description


def test_config_error_stops_an_agent_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "SOPHIA_WORK_BATCH": "-3", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "agents.coder"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "sophia coder: SOPHIA_WORK_BATCH: must be a whole number of at least 1"
    )
