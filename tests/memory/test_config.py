"""MemorySettings declare their bounds; a bad value is one line naming its variable, and the
memory agent refuses it before it connects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from agents.memory import MemoryAgent
from bus import Settings
from bus.config import load
from bus.errors import ConfigError
from memory.config import MemorySettings

ROOT = Path(__file__).resolve().parents[2]

BAD_VALUES = [
    ("EMBED_DEVICE", "gpu", "must be one of auto, cpu, cuda"),
    ("REDIS_URL", "http://cache:6379", "must start with redis://, rediss:// or unix://"),
    ("QDRANT_URL", "grpc://qdrant:6334", "must start with http:// or https://"),
    ("POSTGRES_DSN", "mysql://db", "must start with postgres:// or postgresql://"),
    ("EMBED_THREADS", "-1", "must be a whole number from 0 to 256"),
    ("EMBED_RUN_BATCH", "2048", "must be a whole number from 0 to 1024"),
    ("EMBED_MAX_BATCH", "0", "must be a whole number of at least 1"),
    ("EMBED_MAX_TOKENS", "8", "must be a whole number from 16 to 512"),
    ("EMBED_MAX_WAIT_MS", "5000", "must be a number from 0 to 1000"),
    ("L1_TTL_S", "0", "must be a number greater than 0 and at most 604800"),
    ("CACHE_THRESHOLD", "1.5", "must be a number greater than 0 and at most 1"),
    ("MAX_TEXT_BYTES", "0", "must be a whole number of at least 1"),
    ("CHUNK_OVERLAP", "60", "must be less than chunk_lines"),
    ("EMBED_THREADS", "many", "Expected `int`, got `str`"),
]


@pytest.mark.parametrize(
    ("name", "value", "allowed"), BAD_VALUES, ids=[f"{n}={v}" for n, v, _ in BAD_VALUES]
)
def test_load_refuses_a_bad_value_naming_the_variable(name: str, value: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(MemorySettings, {f"SOPHIA_{name}": value})
    assert info.value.description == f"SOPHIA_{name}: {allowed}"


def test_load_takes_good_values_and_choices_in_any_case() -> None:
    settings = load(
        MemorySettings,
        {
            "SOPHIA_EMBED_DEVICE": "CPU",
            "SOPHIA_REDIS_URL": "rediss://cache:6380",
            "SOPHIA_QDRANT_URL": ":memory:",
            "SOPHIA_POSTGRES_DSN": "postgresql://u@db/sophia",
            "SOPHIA_CHUNK_LINES": "40",
            "SOPHIA_CHUNK_OVERLAP": "39",
        },
    )
    assert (settings.embed_device, settings.chunk_lines, settings.chunk_overlap) == ("cpu", 40, 39)


def test_memory_settings_schema_states_the_bounds() -> None:
    props = msgspec.json.schema(MemorySettings)["$defs"]["MemorySettings"]["properties"]
    assert props["embed_device"]["enum"] == ["auto", "cpu", "cuda"]
    assert (props["embed_max_tokens"]["minimum"], props["embed_max_tokens"]["maximum"]) == (16, 512)
    assert props["cache_threshold"]["exclusiveMinimum"] == 0


def test_memory_agent_loads_its_settings_before_it_connects(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = Settings(home=str(tmp_path), nats_url="nats://127.0.0.1:1")  # nothing listens
    monkeypatch.setenv("SOPHIA_EMBED_DEVICE", "gpu")
    with pytest.raises(ConfigError) as info:
        MemoryAgent(settings)
    monkeypatch.setenv("SOPHIA_EMBED_DEVICE", "cpu")
    monkeypatch.setenv("SOPHIA_HOME", str(tmp_path / "elsewhere"))
    agent = MemoryAgent(settings)
    assert info.value.description == "SOPHIA_EMBED_DEVICE: must be one of auto, cpu, cuda"
    assert agent.memory_settings.embed_device == "cpu"
    assert agent.memory_settings.home == settings.home  # the home follows the bus settings'


def test_memory_agent_process_exits_2_with_one_line_on_a_bad_setting(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SOPHIA_HOME": str(tmp_path),
        "SOPHIA_NATS_URL": "nats://127.0.0.1:1",
        "SOPHIA_EMBED_MAX_TOKENS": "8",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("SOPHIA_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "agents.memory"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "sophia memory: SOPHIA_EMBED_MAX_TOKENS: must be a whole number from 16 to 512"
    ]
