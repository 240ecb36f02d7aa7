"""The sophia_k8s program: namespace, config, secrets, NATS, collector, agents, edge."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from infra.stacks.sophia_k8s import nats, settings, telemetry, workloads


def deploy(config: pulumi.Config | None = None) -> None:
    """Declare every resource of the stack and export where the edge answers."""
    conf = settings.load(config)
    ns = k8s.core.v1.Namespace("sophia", metadata=k8s.meta.v1.ObjectMetaArgs(name=conf.namespace))
    opts = pulumi.ResourceOptions(depends_on=[ns])
    namespace = ns.metadata.name
    env = k8s.core.v1.ConfigMap(
        "sophia-config",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="sophia-config", namespace=namespace),
        data=conf.plain_env,
        opts=opts,
    )
    secret = k8s.core.v1.Secret(
        "sophia-secrets",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="sophia-secrets", namespace=namespace),
        string_data=conf.secrets,
        type="Opaque",
        opts=opts,
    )
    nats_release = nats.nats_release(
        namespace, conf.nats_replicas, conf.nats_storage, conf.prefix, conf.nats_passwords, opts
    )
    collector = telemetry.otel_collector(namespace, conf.otlp_upstream, opts)
    after = pulumi.ResourceOptions(depends_on=[ns, nats_release, collector])
    for spec in (*conf.agents, conf.edge):
        workloads.deployment(
            spec, namespace, conf.image, env.metadata.name, secret.metadata.name, after
        )
    edge = workloads.edge_service(conf.edge, namespace, conf.edge_service_type, opts)
    pulumi.export("namespace", namespace)
    pulumi.export("edge_service", edge.metadata.name)
    pulumi.export("edge_url", pulumi.Output.concat("http://edge.", namespace, ".svc:8420"))
    pulumi.export("replicas", {spec.name: spec.replicas for spec in (*conf.agents, conf.edge)})
