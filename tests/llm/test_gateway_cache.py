"""The gateway's cache by meaning, with the real memory agent: paraphrases share an answer,
near-misses never do, and nothing crosses a model, a system prompt, a project or a task type."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents.memory import MemoryAgent
from bus import Bus
from bus.config import Settings
from bus.schemas.llm import CompleteRequest, Message, Scope
from tests.fixtures.nats_server import running
from tests.fixtures.openai_upstream import OpenAIUpstream
from tests.llm.harness import ask, complete, llm_agent, model, write_toml

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
async def memory(settings: Settings) -> AsyncIterator[MemoryAgent]:
    async with running(MemoryAgent(settings)) as agent:
        yield agent


def one_model(upstream: OpenAIUpstream, tmp_path: Path) -> Path:
    # These tests are about meaning, not speed: a lookup on a loaded machine may take its time.
    return write_toml(
        tmp_path / "sophia.toml", [model("m", upstream.base_url)], cache_lookup_timeout_s=10.0
    )


def with_system(system: str, text: str) -> CompleteRequest:
    return CompleteRequest(
        messages=[Message(role="system", content=system), Message(role="user", content=text)]
    )


@pytest.mark.parametrize(
    ("first", "second", "cached"),
    [
        ("How do I reverse a list in Python?", "How can I reverse a Python list?", "semantic"),
        ("How do I rename a column in PostgreSQL?", "How do I rename a table in PostgreSQL?", ""),
        (
            "How do I open a file for reading in Python?",
            "How do I open a file for appending in Python?",
            "",
        ),
        (
            "How do I enable a feature flag in LaunchDarkly?",
            "How do I disable a feature flag in LaunchDarkly?",
            "",
        ),
    ],
    ids=["paraphrase-hits", "column-vs-table", "reading-vs-appending", "enable-vs-disable"],
)
async def test_semantic_cache_answers_paraphrases_and_refuses_near_misses(
    memory: MemoryAgent,
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
    first: str,
    second: str,
    cached: str,
) -> None:
    async with llm_agent(settings, monkeypatch, one_model(upstream, tmp_path)) as llm:
        asked = await complete(bus, ask(first))
        await llm.settled()
        again = await complete(bus, ask(second))
    assert asked.cached == ""
    assert again.cached == cached
    if cached:
        assert again.text == asked.text and len(upstream.calls("m")) == 1
    else:
        assert again.text == f"echo: {second}" and len(upstream.calls("m")) == 2


async def test_semantic_cache_never_crosses_a_task_type_a_system_prompt_or_a_project(
    memory: MemoryAgent,
    bus: Bus,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    upstream: OpenAIUpstream,
    tmp_path: Path,
) -> None:
    prompt, paraphrase = "How do I reverse a list in Python?", "How can I reverse a Python list?"
    async with llm_agent(settings, monkeypatch, one_model(upstream, tmp_path)) as llm:
        await complete(bus, ask(prompt, task="code"))
        await complete(bus, with_system("You are terse.", prompt))
        await complete(bus, ask(prompt, scope=Scope(project="a")))
        await llm.settled()
        code = await complete(bus, ask(paraphrase, task="code"))
        system = await complete(bus, with_system("You are verbose.", paraphrase))
        project = await complete(bus, ask(paraphrase, scope=Scope(project="b")))
        same_project = await complete(bus, ask(paraphrase, scope=Scope(project="a")))
    assert (code.cached, system.cached, project.cached) == ("", "", "")
    assert same_project.cached == "semantic"
