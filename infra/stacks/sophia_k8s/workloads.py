"""A Deployment per agent and one for the edge (behind a Service); probes as the package says.

Every container reads the same ConfigMap (plain settings) and Secret (credentials) through
``envFrom``, plus its own NATS user (``SOPHIA_NATS_USER``: its service name, as in
ops/nats/accounts.conf) and that user's password alone (``SOPHIA_NATS_PASSWORD``, one key of
the ``nats-passwords`` Secret); nothing secret is ever a literal env value.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from infra.stacks.sophia_k8s.nats import PASSWORDS_SECRET
from infra.stacks.sophia_k8s.settings import AgentSpec
from ops.nats.permissions import password_env

EDGE_PORT = 8420
PROBE_PERIOD_S = 10
PROBE_TIMEOUT_S = 5  # ops.probe bounds itself below this (connect, one discovery window)


def labels(spec: AgentSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/part-of": "sophia"}


def exec_probe(service: str, initial_s: int) -> k8s.core.v1.ProbeArgs:
    """``python -m ops.probe <service>``: this pod's instance answers on the bus."""
    return k8s.core.v1.ProbeArgs(
        exec_=k8s.core.v1.ExecActionArgs(command=["python", "-m", "ops.probe", service]),
        initial_delay_seconds=initial_s,
        period_seconds=PROBE_PERIOD_S,
        timeout_seconds=PROBE_TIMEOUT_S,
        failure_threshold=3,
    )


def http_probe(path: str, initial_s: int) -> k8s.core.v1.ProbeArgs:
    return k8s.core.v1.ProbeArgs(
        http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port=EDGE_PORT),
        initial_delay_seconds=initial_s,
        period_seconds=PROBE_PERIOD_S,
        timeout_seconds=PROBE_TIMEOUT_S,
        failure_threshold=3,
    )


def _container(
    spec: AgentSpec, image: str, config: pulumi.Input[str], secret: pulumi.Input[str]
) -> k8s.core.v1.ContainerArgs:
    is_edge = spec.name == "edge"
    password = k8s.core.v1.EnvVarSourceArgs(
        secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(
            name=PASSWORDS_SECRET, key=password_env(spec.service)
        )
    )
    env = [
        k8s.core.v1.EnvVarArgs(name="SOPHIA_NATS_USER", value=spec.service),
        k8s.core.v1.EnvVarArgs(name="SOPHIA_NATS_PASSWORD", value_from=password),
    ]
    if is_edge:
        env.append(k8s.core.v1.EnvVarArgs(name="SOPHIA_EDGE_BIND", value=f"0.0.0.0:{EDGE_PORT}"))
    return k8s.core.v1.ContainerArgs(
        name=spec.name,
        image=image,
        command=["python", "-m", spec.module],
        env=env,
        env_from=[
            k8s.core.v1.EnvFromSourceArgs(
                config_map_ref=k8s.core.v1.ConfigMapEnvSourceArgs(name=config)
            ),
            k8s.core.v1.EnvFromSourceArgs(secret_ref=k8s.core.v1.SecretEnvSourceArgs(name=secret)),
        ],
        ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=EDGE_PORT)]
        if is_edge
        else None,
        resources=k8s.core.v1.ResourceRequirementsArgs(requests=spec.requests, limits=spec.limits),
        readiness_probe=http_probe("/readyz", 5) if is_edge else exec_probe(spec.service, 5),
        liveness_probe=http_probe("/healthz", 15) if is_edge else exec_probe(spec.service, 30),
    )


def deployment(
    spec: AgentSpec,
    namespace: pulumi.Input[str],
    image: str,
    config: pulumi.Input[str],
    secret: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> k8s.apps.v1.Deployment:
    """The Deployment of one agent (or the edge), ``spec.replicas`` pods."""
    return k8s.apps.v1.Deployment(
        spec.name,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=spec.name, namespace=namespace, labels=labels(spec)
        ),
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=spec.replicas,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels(spec)),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels(spec)),
                spec=k8s.core.v1.PodSpecArgs(
                    containers=[_container(spec, image, config, secret)],
                    termination_grace_period_seconds=30,  # agents drain on SIGTERM
                ),
            ),
        ),
        opts=opts,
    )


def edge_service(
    spec: AgentSpec, namespace: pulumi.Input[str], kind: str, opts: pulumi.ResourceOptions
) -> k8s.core.v1.Service:
    """MCP and HTTP in front of the edge pods."""
    return k8s.core.v1.Service(
        "edge",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="edge", namespace=namespace, labels=labels(spec)),
        spec=k8s.core.v1.ServiceSpecArgs(
            type=kind,
            selector=labels(spec),
            ports=[k8s.core.v1.ServicePortArgs(name="http", port=EDGE_PORT, target_port="http")],
        ),
        opts=opts,
    )
