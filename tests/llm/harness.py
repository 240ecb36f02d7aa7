"""The llm agent against the scripted OpenAI-compatible upstream, configured by sophia.toml."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from agents.llm import LlmAgent
from bus import Bus
from bus.config import Settings
from bus.schemas.llm import CompleteRequest, CompleteResult, Message
from tests.fixtures.nats_server import running

#: fast bounds for tests: a retry waits milliseconds, a hung attempt gives up in a second
FAST = {
    "attempt_timeout_s": 1.0,
    "deadline_s": 8.0,
    "max_retries": 2,
    "backoff_base_s": 0.01,
    "backoff_max_s": 0.05,
    "breaker_failures": 3,
    "breaker_cooldown_s": 0.5,
}


def model(name: str, base_url: str, **fields: Any) -> dict[str, Any]:
    """One ``[[llm.models]]`` entry on the upstream, its own circuit breaker by default."""
    return {"name": name, "base_url": base_url, "circuit": name, **fields}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def write_toml(
    path: Path,
    models: Iterable[dict[str, Any]],
    *,
    routes: dict[str, list[str]] | None = None,
    budgets: dict[str, float] | None = None,
    **table: Any,
) -> Path:
    lines = ["[llm]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in {**FAST, **table}.items()]
    for entry in models:
        lines.append("[[llm.models]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
    if routes:
        lines.append("[llm.routes]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in routes.items()]
    if budgets:
        lines.append("[llm.budgets]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in budgets.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@asynccontextmanager
async def llm_agent(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    toml: Path | None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[LlmAgent]:
    """The llm agent in-process, reading ``toml`` (no configuration at all when None) and
    ``env`` (every other gateway variable unset)."""
    for name in (
        "SOPHIA_LLM_BASE_URL",
        "SOPHIA_LLM_MODEL",
        "PORTKEY_API_KEY",
        "PORTKEY_GATEWAY_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    if toml is None:
        toml = Path(settings.home) / "empty.toml"
        toml.parent.mkdir(parents=True, exist_ok=True)
        toml.write_text("")
    monkeypatch.setenv("SOPHIA_CONFIG", str(toml))
    async with running(LlmAgent(settings)) as agent:
        yield agent


def ask(text: str, **fields: Any) -> CompleteRequest:
    return CompleteRequest(messages=[Message(role="user", content=text)], **fields)


async def complete(bus: Bus, request: CompleteRequest, timeout: float = 15.0) -> CompleteResult:
    return await bus.request("llm", "complete", request, CompleteResult, timeout=timeout)
