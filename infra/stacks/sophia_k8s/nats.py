"""NATS from its official Helm chart: a 3-node cluster with JetStream on file storage.

Sophia's streams get 3 replicas from ``SOPHIA_STREAM_REPLICAS`` in the agents' ConfigMap
(the agents create them at start). The chart's own defaults do the rest (a headless service
for routes, a ``nats`` client service on 4222, monitoring on 8222).
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

CHART = "nats"
CHART_REPO = "https://nats-io.github.io/k8s/helm/charts/"
CHART_VERSION = "1.3.7"


def chart_values(replicas: int, storage: str) -> dict[str, object]:
    """The chart's values: clustering on, JetStream with a persistent file store per node."""
    return {
        "fullnameOverride": "nats",
        "config": {
            "cluster": {"enabled": True, "replicas": replicas},
            "jetstream": {
                "enabled": True,
                "fileStore": {"enabled": True, "pvc": {"enabled": True, "size": storage}},
                "memoryStore": {"enabled": False},
            },
            "monitor": {"enabled": True},
        },
        "podTemplate": {"topologySpreadConstraints": {"kubernetes.io/hostname": {}}},
    }


def nats_release(
    namespace: pulumi.Input[str], replicas: int, storage: str, opts: pulumi.ResourceOptions
) -> k8s.helm.v3.Release:
    return k8s.helm.v3.Release(
        "nats",
        k8s.helm.v3.ReleaseArgs(
            chart=CHART,
            version=CHART_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPO),
            namespace=namespace,
            values=chart_values(replicas, storage),
        ),
        opts=opts,
    )
