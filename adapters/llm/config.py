"""The gateway's configuration: models, routes by task, budgets, retry and breaker bounds.

Two ways in, checked at start-up with one clear line per bad value:

- the quick one, two variables: ``SOPHIA_LLM_BASE_URL`` (an OpenAI-compatible ``/v1`` URL)
  and ``SOPHIA_LLM_MODEL`` (plus ``SOPHIA_LLM_API_KEY`` when the server needs one): one model
  for every task;
- the full one, an ``[llm]`` table in ``sophia.toml`` with ``[[llm.models]]``,
  ``[llm.routes]`` and ``[llm.budgets]``.

Keys never come from the file: a model names the environment variable that holds its key
(``api_key_env``), read once here and never logged or shown (``ModelSpec.__repr__`` hides
it). Pulumi ESC delivers keys the same way (``esc run <env> -- sophia up``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Literal

import msgspec

from bus.config import allowed, toml_table
from bus.errors import ConfigError
from bus.schemas.llm import TASKS

Capability = Literal["json_schema", "json_mode", "tools", "stream"]
Price = Annotated[float, msgspec.Meta(ge=0, le=10_000)]
Bound = Annotated[float, msgspec.Meta(gt=0, le=3600)]
Usd = Annotated[float, msgspec.Meta(gt=0, le=1_000_000)]

#: what to set when nothing is configured (the 503 names them)
SETUP_HINT = (
    "no model is configured: set SOPHIA_LLM_BASE_URL and SOPHIA_LLM_MODEL "
    "(an OpenAI-compatible server), or [[llm.models]] in sophia.toml"
)


class ModelTable(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One ``[[llm.models]]`` entry as written in sophia.toml."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:/@-]{1,128}$")]
    model: str = ""  # the upstream's model id; the name when empty
    provider: str = "openai"  # a Portkey provider slug ("openai", "anthropic", "openrouter"…)
    base_url: str = ""  # an OpenAI-compatible /v1 URL (Portkey's custom_host)
    api_key_env: str = ""  # the variable that holds this model's key
    virtual_key_env: str = ""  # the variable that holds its Portkey virtual key
    context_window: Annotated[int, msgspec.Meta(ge=256, le=100_000_000)] = 8192
    input_usd_per_mtok: Price = 0.0
    output_usd_per_mtok: Price = 0.0
    quality: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5
    capabilities: list[Capability] = msgspec.field(default_factory=lambda: ["json_mode"])
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 16
    circuit: str = ""  # models that share a circuit breaker; default: the same server


class BudgetTable(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    per_task_usd: Usd | None = None
    per_project_usd: Usd | None = None
    per_day_usd: Usd | None = None


class LlmTable(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The ``[llm]`` table; every bound has a default that suits a hosted model."""

    models: list[ModelTable] = msgspec.field(default_factory=list)
    routes: dict[str, list[str]] = msgspec.field(default_factory=dict)
    budgets: BudgetTable = msgspec.field(default_factory=BudgetTable)
    attempt_timeout_s: Bound = 60.0  # one HTTP attempt
    deadline_s: Bound = 180.0  # the whole call, retries and fallbacks included
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2  # per model, then the next
    backoff_base_s: Bound = 0.25
    backoff_max_s: Bound = 8.0
    breaker_failures: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    breaker_cooldown_s: Bound = 30.0
    cache_ttl_s: Bound = 24 * 3600.0
    exact_cache_items: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 4096
    cache_lookup_timeout_s: Bound = 0.5  # the memory agent's cache; a miss when slower
    semantic_threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A configured model, its key resolved from the environment (never shown)."""

    name: str
    upstream_model: str
    provider: str
    base_url: str
    context_window: int
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    quality: float
    capabilities: frozenset[str]
    concurrency: int
    circuit: str = ""
    api_key: str = field(default="", repr=False)
    virtual_key: str = field(default="", repr=False)

    @property
    def breaker_key(self) -> str:
        """What a circuit breaker guards: the server this model is reached on, unless the
        configuration groups models otherwise."""
        return self.circuit or self.base_url or self.provider

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok
        ) / 1_000_000


@dataclass(frozen=True, slots=True)
class Transport:
    """How the SDK reaches models: straight to each model's server, or through Portkey."""

    kind: Literal["direct", "portkey-hosted", "portkey-gateway"]
    base_url: str = ""  # the Portkey gateway's /v1 URL, for the Portkey kinds
    portkey_api_key: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class LlmConfig:
    models: tuple[ModelSpec, ...]
    routes: dict[str, tuple[str, ...]]
    budgets: BudgetTable
    table: LlmTable
    transport: Transport

    @property
    def configured(self) -> bool:
        return bool(self.models)

    def model(self, name: str) -> ModelSpec | None:
        return next((m for m in self.models if m.name == name), None)


HOSTED_PORTKEY = "https://api.portkey.ai/v1"


def load_llm(env: Mapping[str, str] | None = None) -> LlmConfig:
    """The gateway's configuration from the environment and ``sophia.toml``'s ``[llm]``.

    Raises ConfigError naming the setting and what it allows.
    """
    env = os.environ if env is None else env
    table = _table(env)
    models = [_spec(m, env) for m in table.models]
    quick = _quick_model(env)
    if quick is not None:
        models = [quick, *[m for m in models if m.name != quick.name]]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError("[llm] models: every name must be different")
    routes = _routes(table.routes, set(names))
    return LlmConfig(tuple(models), routes, _budgets(table.budgets, env), table, _transport(env))


def _table(env: Mapping[str, str]) -> LlmTable:
    raw = toml_table("llm", env)
    try:
        return msgspec.convert(raw, LlmTable, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"[llm] {_where(str(exc))}") from None


def _where(message: str) -> str:
    what, at, path = message.rpartition(" - at `$.")
    return f"{path.rstrip('`')}: {what}" if at else message


def _spec(m: ModelTable, env: Mapping[str, str]) -> ModelSpec:
    if m.base_url and not m.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"[llm] models {m.name}: base_url must start with http:// or https://")
    return ModelSpec(
        name=m.name,
        upstream_model=m.model or m.name,
        provider=m.provider,
        base_url=m.base_url.rstrip("/"),
        context_window=m.context_window,
        input_usd_per_mtok=m.input_usd_per_mtok,
        output_usd_per_mtok=m.output_usd_per_mtok,
        quality=m.quality,
        capabilities=frozenset(m.capabilities),
        concurrency=m.concurrency,
        circuit=m.circuit,
        api_key=_secret(env, m.api_key_env, m.name),
        virtual_key=_secret(env, m.virtual_key_env, m.name),
    )


def _secret(env: Mapping[str, str], variable: str, model: str) -> str:
    if not variable:
        return ""
    value = env.get(variable, "")
    if not value:
        raise ConfigError(f"[llm] models {model}: the variable {variable} is not set")
    return value


class QuickModel(msgspec.Struct, kw_only=True):
    """``SOPHIA_LLM_*``: one OpenAI-compatible model for every task."""

    base_url: Annotated[
        str, msgspec.Meta(pattern=r"^https?://\S+$", description="must be an http(s):// URL")
    ]
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    context_window: Annotated[int, msgspec.Meta(ge=256, le=100_000_000)] = 32_768
    input_usd_per_mtok: Price = 0.0
    output_usd_per_mtok: Price = 0.0
    capabilities: str = "json_mode"


def _quick_model(env: Mapping[str, str]) -> ModelSpec | None:
    base_url, model = env.get("SOPHIA_LLM_BASE_URL", ""), env.get("SOPHIA_LLM_MODEL", "")
    if not base_url and not model:
        return None
    if not base_url or not model:
        missing = "SOPHIA_LLM_MODEL" if base_url else "SOPHIA_LLM_BASE_URL"
        raise ConfigError(f"{missing}: must be set together with the other SOPHIA_LLM_ variable")
    raw = {
        f.name: env[f"SOPHIA_LLM_{f.name.upper()}"]
        for f in msgspec.structs.fields(QuickModel)
        if env.get(f"SOPHIA_LLM_{f.name.upper()}")
    }
    try:
        quick = msgspec.convert(raw, QuickModel, strict=False)
    except msgspec.ValidationError as exc:
        name, _, rest = _where(str(exc)).partition(": ")
        fields = {f.name: f for f in msgspec.inspect.type_info(QuickModel).fields}  # type: ignore[attr-defined]
        why = allowed(fields[name].type) if name in fields and ", got `" not in rest else rest
        raise ConfigError(f"SOPHIA_LLM_{name.upper()}: {why}") from None
    capabilities = frozenset(c.strip() for c in quick.capabilities.split(",") if c.strip())
    return ModelSpec(
        name=quick.model,
        upstream_model=quick.model,
        provider="openai",
        base_url=quick.base_url.rstrip("/"),
        context_window=quick.context_window,
        input_usd_per_mtok=quick.input_usd_per_mtok,
        output_usd_per_mtok=quick.output_usd_per_mtok,
        quality=0.5,
        capabilities=capabilities,
        concurrency=64,
        api_key=env.get("SOPHIA_LLM_API_KEY", ""),
    )


def _routes(routes: dict[str, list[str]], names: set[str]) -> dict[str, tuple[str, ...]]:
    for task, chain in routes.items():
        if task not in TASKS:
            raise ConfigError(f"[llm] routes: {task!r} is not a task ({', '.join(TASKS)})")
        unknown = [n for n in chain if n not in names]
        if unknown:
            raise ConfigError(f"[llm] routes {task}: no model named {unknown[0]!r}")
    return {task: tuple(chain) for task, chain in routes.items()}


def _budgets(table: BudgetTable, env: Mapping[str, str]) -> BudgetTable:
    """Budgets from ``[llm.budgets]``, each overridable by ``SOPHIA_LLM_BUDGET_<NAME>``."""
    raw = msgspec.to_builtins(table)
    for name in raw:
        value = env.get(f"SOPHIA_LLM_BUDGET_{name.upper()}")
        if value:
            raw[name] = value
    try:
        return msgspec.convert(raw, BudgetTable, strict=False)
    except msgspec.ValidationError as exc:
        name = _where(str(exc)).partition(": ")[0]
        raise ConfigError(
            f"SOPHIA_LLM_BUDGET_{name.upper()}: must be a number of US dollars above 0"
        ) from None


def _transport(env: Mapping[str, str]) -> Transport:
    gateway = env.get("PORTKEY_GATEWAY_URL", "").rstrip("/")
    key = env.get("PORTKEY_API_KEY", "")
    if gateway:
        if not gateway.startswith(("http://", "https://")):
            raise ConfigError("PORTKEY_GATEWAY_URL: must start with http:// or https://")
        return Transport("portkey-gateway", _v1(gateway), key)
    if key:
        return Transport("portkey-hosted", HOSTED_PORTKEY, key)
    return Transport("direct")


def _v1(url: str) -> str:
    return url if url.endswith("/v1") else f"{url}/v1"
