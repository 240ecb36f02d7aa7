"""The sophia_k8s program under Pulumi's mocks: what it declares, with which key fields."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pulumi
import pytest

from infra.stacks.sophia_k8s.program import deploy
from infra.stacks.sophia_k8s.settings import AGENTS, complete_passwords
from ops.nats.permissions import password_env, render, user_names

SECRET = "canary-k8s-secret-value"
PASSWORDS = {user: f"p{user}canary{n}" for n, user in enumerate(user_names())}
# Pulumi's wire form of a secret value (its resource protocol's signature key and secret
# signature): the mock engine sees the Secret's data still marked secret
SIG_KEY, SECRET_SIG = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"


class Recorder(pulumi.runtime.Mocks):
    """Pulumi's mock engine: every resource the program registers, with its inputs."""

    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}

    def of(self, typ: str) -> dict[str, dict[str, Any]]:
        return {r.name: r.inputs for r in self.resources if r.typ == typ}


def run_program(config: dict[str, str], secret_keys: list[str]) -> Recorder:
    mocks = Recorder()
    pulumi.runtime.set_mocks(mocks, project="sophia_k8s", stack="dev", preview=False)
    pulumi.runtime.set_all_config(config, secret_keys)

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        deploy()
        return pulumi.Output.from_input(None)

    program()
    return mocks


@pytest.fixture(scope="module")
def stack() -> Iterator[Recorder]:
    config = {
        "sophia_k8s:replicas": json.dumps({"coder": 5}),
        "sophia_k8s:memory": json.dumps({"redisUrl": "redis://redis:6379/0"}),
        "sophia_k8s:secrets": json.dumps({"SOPHIA_LLM_API_KEY": SECRET}),
        "sophia_k8s:natsPasswords": json.dumps(PASSWORDS),
    }
    # Pulumi's runtime runs on the thread's current event loop; an anyio test before this
    # one may have left none behind, so the program gets a loop of its own
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield run_program(config, ["sophia_k8s:secrets", "sophia_k8s:natsPasswords"])
    finally:
        pulumi.runtime.set_all_config({}, [])
        asyncio.set_event_loop(None)
        loop.close()


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return deployment["spec"]["template"]["spec"]["containers"]


def test_k8s_stack_declares_each_kind_it_needs(stack: Recorder) -> None:
    kinds = [r.typ for r in stack.resources]
    expected_deployments = {a.name for a in AGENTS} | {"edge", "otel-collector"}
    assert set(stack.of("kubernetes:apps/v1:Deployment")) == expected_deployments
    assert kinds.count("kubernetes:helm.sh/v3:Release") == 1
    assert set(stack.of("kubernetes:core/v1:Service")) == {"edge", "otel-collector"}
    assert set(stack.of("kubernetes:core/v1:Secret")) == {"sophia-secrets", "nats-passwords"}
    assert kinds.count("kubernetes:core/v1:Namespace") == 1
    assert set(stack.of("kubernetes:core/v1:ConfigMap")) == {
        "sophia-config",
        "otel-collector",
        "nats-accounts",
    }


def test_k8s_stack_nats_is_three_nodes_with_jetstream_on_files(stack: Recorder) -> None:
    release = stack.of("kubernetes:helm.sh/v3:Release")["nats"]
    config = release["values"]["config"]
    env = stack.of("kubernetes:core/v1:ConfigMap")["sophia-config"]["data"]
    assert release["chart"] == "nats"
    assert config["cluster"] == {"enabled": True, "replicas": 3}
    assert config["jetstream"]["enabled"] is True
    assert config["jetstream"]["fileStore"]["enabled"] is True
    assert env["SOPHIA_STREAM_REPLICAS"] == "3"


@pytest.mark.parametrize("agent", [a for a in AGENTS], ids=[a.name for a in AGENTS])
def test_k8s_stack_agents_have_limits_and_exec_probes(stack: Recorder, agent: Any) -> None:
    (container,) = containers(stack.of("kubernetes:apps/v1:Deployment")[agent.name])
    probe = ["python", "-m", "ops.probe", agent.service]
    assert container["command"] == ["python", "-m", agent.module]
    assert container["readinessProbe"]["exec"]["command"] == probe
    assert container["livenessProbe"]["exec"]["command"] == probe
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}


def test_k8s_stack_edge_has_http_probes_behind_a_service(stack: Recorder) -> None:
    (container,) = containers(stack.of("kubernetes:apps/v1:Deployment")["edge"])
    service = stack.of("kubernetes:core/v1:Service")["edge"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/name": "edge",
        "app.kubernetes.io/part-of": "sophia",
    }
    assert service["spec"]["ports"][0]["port"] == 8420


def test_k8s_stack_replicas_come_from_config(stack: Recorder) -> None:
    deployments = stack.of("kubernetes:apps/v1:Deployment")
    assert deployments["coder"]["spec"]["replicas"] == 5
    assert deployments["reviewer"]["spec"]["replicas"] == 2  # the default
    assert deployments["planner"]["spec"]["replicas"] == 1


def test_k8s_stack_wires_config_and_secrets_apart(stack: Recorder) -> None:
    env = stack.of("kubernetes:core/v1:ConfigMap")["sophia-config"]["data"]
    secret = stack.of("kubernetes:core/v1:Secret")["sophia-secrets"]
    plain = [r.inputs for r in stack.resources if r.typ != "kubernetes:core/v1:Secret"]
    assert env["SOPHIA_REDIS_URL"] == "redis://redis:6379/0"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://otel-collector.")
    assert secret["stringData"] == {SIG_KEY: SECRET_SIG, "value": {"SOPHIA_LLM_API_KEY": SECRET}}
    assert SECRET not in json.dumps(plain, default=str)
    for name in [a.name for a in AGENTS]:
        (container,) = containers(stack.of("kubernetes:apps/v1:Deployment")[name])
        refs = [next(iter(source)) for source in container["envFrom"]]
        assert refs == ["configMapRef", "secretRef"]


@pytest.mark.parametrize("agent", [*AGENTS], ids=lambda a: a.name)
def test_k8s_stack_each_agent_logs_in_as_its_own_nats_user(stack: Recorder, agent: Any) -> None:
    (container,) = containers(stack.of("kubernetes:apps/v1:Deployment")[agent.name])
    env = {e["name"]: e for e in container["env"]}
    assert env["SOPHIA_NATS_USER"]["value"] == agent.service
    ref = env["SOPHIA_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "nats-passwords", "key": password_env(agent.service)}
    assert "value" not in env["SOPHIA_NATS_PASSWORD"]


def test_k8s_stack_nats_runs_the_generated_accounts(stack: Recorder) -> None:
    accounts = stack.of("kubernetes:core/v1:ConfigMap")["nats-accounts"]["data"]
    assert accounts == {"accounts.conf": render()}
    values = stack.of("kubernetes:helm.sh/v3:Release")["nats"]["values"]
    assert values["config"]["merge"] == {"$include": "../nats-accounts/accounts.conf"}
    env = values["container"]["env"]
    assert set(env) == {password_env(u) for u in user_names()}
    assert all(v["valueFrom"]["secretKeyRef"]["name"] == "nats-passwords" for v in env.values())
    mounts = [op["value"] for op in values["container"]["patch"]]
    volumes = [op["value"] for op in values["podTemplate"]["patch"]]
    assert mounts == [{"name": "accounts", "mountPath": "/etc/nats-accounts", "readOnly": True}]
    assert volumes == [{"name": "accounts", "configMap": {"name": "nats-accounts"}}]


def test_k8s_stack_nats_passwords_stay_secret(stack: Recorder) -> None:
    secret = stack.of("kubernetes:core/v1:Secret")["nats-passwords"]["stringData"]
    assert secret[SIG_KEY] == SECRET_SIG
    assert secret["value"] == {password_env(u): p for u, p in PASSWORDS.items()}
    plain = [r.inputs for r in stack.resources if r.typ != "kubernetes:core/v1:Secret"]
    text = json.dumps(plain, default=str)
    assert not [p for p in PASSWORDS.values() if p in text]


def test_k8s_stack_names_the_nats_users_without_a_password() -> None:
    given = {u: p for u, p in PASSWORDS.items() if u not in {"edge", "sys"}}
    with pytest.raises(ValueError, match=r"natsPasswords: no password for edge, sys$"):
        complete_passwords(given, "sophia")
