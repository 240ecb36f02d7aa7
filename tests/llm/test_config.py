"""The gateway's configuration: the two-variable set-up, [llm] in sophia.toml, clear errors,
keys from the environment only, and the SDK arguments each transport gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.llm.config import HOSTED_PORTKEY, load_llm
from adapters.llm.transport import Transports
from bus.errors import ConfigError


def env_with(tmp_path: Path, toml: str = "", **variables: str) -> dict[str, str]:
    path = tmp_path / "sophia.toml"
    path.write_text(toml)
    return {"SOPHIA_CONFIG": str(path), **variables}


def test_load_llm_nothing_configured_is_not_an_error(tmp_path: Path) -> None:
    config = load_llm(env_with(tmp_path))
    assert config.configured is False and config.transport.kind == "direct"


def test_load_llm_two_variables_make_one_model_for_every_task(tmp_path: Path) -> None:
    config = load_llm(
        env_with(
            tmp_path,
            SOPHIA_LLM_BASE_URL="http://127.0.0.1:11434/v1/",
            SOPHIA_LLM_MODEL="qwen",
            SOPHIA_LLM_API_KEY="sk-secret-value",
            SOPHIA_LLM_CAPABILITIES="json_schema,tools",
        )
    )
    [spec] = config.models
    assert (spec.name, spec.base_url, spec.api_key) == (
        "qwen",
        "http://127.0.0.1:11434/v1",
        "sk-secret-value",
    )
    assert spec.capabilities == {"json_schema", "tools"}
    assert "sk-secret-value" not in repr(spec)


@pytest.mark.parametrize(
    ("variables", "toml", "message"),
    [
        ({"SOPHIA_LLM_BASE_URL": "http://x/v1"}, "", "SOPHIA_LLM_MODEL: must be set together"),
        (
            {"SOPHIA_LLM_BASE_URL": "ftp://x", "SOPHIA_LLM_MODEL": "m"},
            "",
            "SOPHIA_LLM_BASE_URL: must be an http(s):// URL",
        ),
        (
            {
                "SOPHIA_LLM_BASE_URL": "http://x",
                "SOPHIA_LLM_MODEL": "m",
                "SOPHIA_LLM_CONTEXT_WINDOW": "ten",
            },
            "",
            "SOPHIA_LLM_CONTEXT_WINDOW",
        ),
        ({}, '[[llm.models]]\nname = "a"\ncontext_window = 1\n', "[llm] models[0].context_window"),
        ({}, '[[llm.models]]\nname = "a"\nqualty = 1\n', "qualty"),
        (
            {},
            '[[llm.models]]\nname = "a"\napi_key_env = "NOT_SET_ANYWHERE"\n',
            "the variable NOT_SET_ANYWHERE is not set",
        ),
        (
            {},
            '[[llm.models]]\nname = "a"\n[[llm.models]]\nname = "a"\n',
            "every name must be different",
        ),
        ({}, '[[llm.models]]\nname = "a"\n[llm.routes]\ncode = ["b"]\n', "no model named 'b'"),
        ({}, '[[llm.models]]\nname = "a"\n[llm.routes]\ncooking = ["a"]\n', "is not a task"),
        ({"SOPHIA_LLM_BUDGET_PER_DAY_USD": "-3"}, "", "SOPHIA_LLM_BUDGET_PER_DAY_USD"),
        ({"PORTKEY_GATEWAY_URL": "gateway:8787"}, "", "PORTKEY_GATEWAY_URL"),
    ],
    ids=[
        "half-quick",
        "bad-url",
        "bad-window",
        "small-window",
        "unknown-field",
        "missing-key",
        "duplicate",
        "route-unknown-model",
        "route-unknown-task",
        "negative-budget",
        "gateway-url",
    ],
)
def test_load_llm_bad_settings_name_what_is_wrong(
    tmp_path: Path, variables: dict[str, str], toml: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_llm(env_with(tmp_path, toml, **variables))
    assert message in str(caught.value)


def test_load_llm_key_comes_from_the_named_variable_and_is_never_shown(tmp_path: Path) -> None:
    toml = '[[llm.models]]\nname = "a"\napi_key_env = "A_KEY"\nvirtual_key_env = "A_VK"\n'
    config = load_llm(env_with(tmp_path, toml, A_KEY="sk-live-123", A_VK="vk-456"))
    [spec] = config.models
    assert (spec.api_key, spec.virtual_key) == ("sk-live-123", "vk-456")
    assert "sk-live-123" not in repr(config) and "vk-456" not in repr(config)


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({}, {"base_url": "http://up:8000/v1", "api_key": "direct", "Authorization": "sk-u"}),
        (
            {"PORTKEY_GATEWAY_URL": "http://gw:8787"},
            {
                "base_url": "http://gw:8787/v1",
                "provider": "openai",
                "custom_host": "http://up:8000/v1",
                "Authorization": "sk-u",
            },
        ),
        (
            {"PORTKEY_API_KEY": "pk-1"},
            {
                "base_url": HOSTED_PORTKEY,
                "api_key": "pk-1",
                "provider": "openai",
                "custom_host": "http://up:8000/v1",
                "Authorization": "sk-u",
            },
        ),
    ],
    ids=["direct", "self-hosted-gateway", "hosted-portkey"],
)
@pytest.mark.anyio
async def test_transports_give_the_sdk_one_shape_per_transport(
    tmp_path: Path, variables: dict[str, str], expected: dict[str, str]
) -> None:
    toml = '[[llm.models]]\nname = "a"\nbase_url = "http://up:8000/v1"\napi_key_env = "U"\n'
    config = load_llm(env_with(tmp_path, toml, U="sk-u", **variables))
    transports = Transports(config.transport)
    arguments = transports.sdk_arguments(config.models[0])
    await transports.aclose()
    assert {k: v for k, v in arguments.items() if k != "http_client"} == expected


@pytest.mark.anyio
async def test_transports_hosted_portkey_uses_a_virtual_key_when_given(tmp_path: Path) -> None:
    toml = '[[llm.models]]\nname = "claude"\nprovider = "anthropic"\nvirtual_key_env = "VK"\n'
    config = load_llm(env_with(tmp_path, toml, VK="vk-anthropic", PORTKEY_API_KEY="pk-1"))
    transports = Transports(config.transport)
    arguments = transports.sdk_arguments(config.models[0])
    await transports.aclose()
    assert arguments["virtual_key"] == "vk-anthropic" and "provider" not in arguments
