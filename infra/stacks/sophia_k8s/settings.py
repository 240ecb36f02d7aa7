"""The stack's configuration, read from Pulumi config (namespace ``sophia_k8s``).

Keys (all optional): ``namespace``, ``image``, ``replicas.<agent>`` (what ``sophia.infra.scale``
sets), ``resources.<agent>.{requests,limits}.{cpu,memory}``, ``natsReplicas`` (3),
``natsStorage`` (``10Gi``), ``memory.{redisUrl,qdrantUrl,s3Bucket,s3EndpointUrl}`` (the
production memory backends' endpoints), ``env`` (more plain ``SOPHIA_*`` values),
``secrets`` (a *secret* object: credentials such as ``SOPHIA_POSTGRES_DSN``,
``SOPHIA_LLM_API_KEY``, ``AWS_SECRET_ACCESS_KEY``), ``edgeServiceType`` (``ClusterIP``),
``otlpUpstream`` (where the collector forwards traces; empty: it only logs them),
``natsPasswords`` (a *secret* object, required: one password per NATS user of
ops/nats/accounts.conf, ``{"memory": "…", "tasks": "…", …, "admin": "…", "sys": "…"}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi

from ops.nats.permissions import user_names


@dataclass(frozen=True)
class AgentSpec:
    """One agent process: what runs, under which service name, with what resources."""

    name: str
    module: str  # ``python -m <module>``
    service: str  # its NATS micro-service name (what ops.probe asks for)
    replicas: int = 1
    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "250m", "memory": "512Mi"})
    limits: dict[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "1Gi"})


AGENTS: tuple[AgentSpec, ...] = (
    AgentSpec(
        "memory",
        "agents.memory",
        "memory",
        requests={"cpu": "500m", "memory": "1Gi"},
        limits={"cpu": "2", "memory": "4Gi"},
    ),
    AgentSpec("llm", "agents.llm", "llm"),
    AgentSpec("planner", "agents.planner", "tasks"),
    AgentSpec("coder", "agents.coder", "coder", replicas=2),
    AgentSpec("reviewer", "agents.reviewer", "reviewer", replicas=2),
    AgentSpec("infra", "agents.infra", "infra"),
)
EDGE = AgentSpec("edge", "edge", "edge", replicas=2)
MEMORY_ENV = {
    "redisUrl": "SOPHIA_REDIS_URL",
    "qdrantUrl": "SOPHIA_QDRANT_URL",
    "s3Bucket": "SOPHIA_S3_BUCKET",
    "s3EndpointUrl": "SOPHIA_S3_ENDPOINT_URL",
}


@dataclass(frozen=True)
class StackSettings:
    namespace: str
    image: str
    agents: tuple[AgentSpec, ...]
    edge: AgentSpec
    nats_replicas: int
    nats_storage: str
    plain_env: dict[str, str]
    secrets: pulumi.Output[dict[str, str]]
    edge_service_type: str
    otlp_upstream: str
    prefix: str
    nats_passwords: pulumi.Output[dict[str, str]]


def _sized(spec: AgentSpec, replicas: dict[str, Any], resources: dict[str, Any]) -> AgentSpec:
    count = int(replicas.get(spec.name, spec.replicas))
    if count < 0:
        raise ValueError(f"replicas.{spec.name}: must be 0 or more")
    own = resources.get(spec.name, {})
    return AgentSpec(
        spec.name,
        spec.module,
        spec.service,
        count,
        {**spec.requests, **own.get("requests", {})},
        {**spec.limits, **own.get("limits", {})},
    )


def load(config: pulumi.Config | None = None) -> StackSettings:
    """Read the stack's config. Raises ValueError naming a bad key."""
    cfg = config or pulumi.Config("sophia_k8s")
    replicas = cfg.get_object("replicas") or {}
    resources = cfg.get_object("resources") or {}
    namespace = cfg.get("namespace") or "sophia"
    memory = cfg.get_object("memory") or {}
    plain = {
        "SOPHIA_NATS_URL": f"nats://nats.{namespace}.svc:4222",
        "SOPHIA_STREAM_REPLICAS": "3",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://otel-collector.{namespace}.svc:4318",
        "SOPHIA_HOME": "/var/lib/sophia",
        **{MEMORY_ENV[k]: str(v) for k, v in memory.items() if k in MEMORY_ENV},
        **{str(k): str(v) for k, v in (cfg.get_object("env") or {}).items()},
    }
    secrets = cfg.get_secret_object("secrets") or pulumi.Output.secret({})
    prefix = plain.get("SOPHIA_PREFIX", "sophia")
    passwords = cfg.get_secret_object("natsPasswords") or pulumi.Output.secret({})
    return StackSettings(
        namespace=namespace,
        image=cfg.get("image") or "sophia:0.1.0",
        agents=tuple(_sized(a, replicas, resources) for a in AGENTS),
        edge=_sized(EDGE, replicas, resources),
        nats_replicas=cfg.get_int("natsReplicas") or 3,
        nats_storage=cfg.get("natsStorage") or "10Gi",
        plain_env=plain,
        secrets=secrets,
        edge_service_type=cfg.get("edgeServiceType") or "ClusterIP",
        otlp_upstream=cfg.get("otlpUpstream") or "",
        prefix=prefix,
        nats_passwords=passwords.apply(lambda given: complete_passwords(given, prefix)),
    )


def complete_passwords(given: dict[str, Any], prefix: str) -> dict[str, str]:
    """``given`` when it has a password for every NATS user of the install, else ValueError
    naming the missing users (never a value)."""
    missing = [user for user in user_names(prefix) if not given.get(user)]
    if missing:
        raise ValueError(f"natsPasswords: no password for {', '.join(missing)}")
    return {str(user): str(password) for user, password in given.items()}
