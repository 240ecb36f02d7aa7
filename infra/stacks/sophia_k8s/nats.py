"""NATS from its official Helm chart: a 3-node cluster with JetStream on file storage, and the
accounts of ops/nats/accounts.conf (one user per agent, the edge only on public endpoints).

Sophia's streams get 3 replicas from ``SOPHIA_STREAM_REPLICAS`` in the agents' ConfigMap
(the agents create them at start). The accounts file is generated here from the agents'
endpoint tables (:func:`ops.nats.permissions.render`, as the committed file is), mounted from a
ConfigMap and included by the chart's config; the servers read each password from their
environment, filled from the Secret ``nats-passwords`` (the stack's secret config
``natsPasswords``), and every agent reads only its own key of it. The chart's own defaults do
the rest (a headless service for routes, a ``nats`` client service on 4222, monitoring on
8222). Routes are not authenticated: the chart writes route credentials into its ConfigMap in
the clear, so they stay inside the cluster network instead (add route TLS for more).
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from ops.nats.permissions import password_env, render, user_names

CHART = "nats"
CHART_REPO = "https://nats-io.github.io/k8s/helm/charts/"
CHART_VERSION = "1.3.7"
PASSWORDS_SECRET = "nats-passwords"
ACCOUNTS_CONFIG_MAP = "nats-accounts"
# beside the chart's /etc/nats-config (a mount inside that read-only volume would fail)
ACCOUNTS_DIR = "/etc/nats-accounts"


def chart_values(replicas: int, storage: str, prefix: str) -> dict[str, object]:
    """The chart's values: clustering on, JetStream with a persistent file store per node,
    the accounts included and their passwords from the Secret."""
    passwords = {
        password_env(user): {
            "valueFrom": {"secretKeyRef": {"name": PASSWORDS_SECRET, "key": password_env(user)}}
        }
        for user in user_names(prefix)
    }
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
            # relative to /etc/nats-config/nats.conf
            "merge": {"$include": f"..{ACCOUNTS_DIR.removeprefix('/etc')}/accounts.conf"},
        },
        "container": {
            "env": passwords,
            "patch": [
                {
                    "op": "add",
                    "path": "/volumeMounts/-",
                    "value": {"name": "accounts", "mountPath": ACCOUNTS_DIR, "readOnly": True},
                }
            ],
        },
        "podTemplate": {
            "topologySpreadConstraints": {"kubernetes.io/hostname": {}},
            "patch": [
                {
                    "op": "add",
                    "path": "/spec/volumes/-",
                    "value": {"name": "accounts", "configMap": {"name": ACCOUNTS_CONFIG_MAP}},
                }
            ],
        },
    }


def nats_release(
    namespace: pulumi.Input[str],
    replicas: int,
    storage: str,
    prefix: str,
    passwords: pulumi.Output[dict[str, str]],
    opts: pulumi.ResourceOptions,
) -> k8s.helm.v3.Release:
    """The release, after the accounts ConfigMap and the passwords Secret it reads."""
    accounts = k8s.core.v1.ConfigMap(
        ACCOUNTS_CONFIG_MAP,
        metadata=k8s.meta.v1.ObjectMetaArgs(name=ACCOUNTS_CONFIG_MAP, namespace=namespace),
        data={"accounts.conf": render(prefix)},
        opts=opts,
    )
    secret = k8s.core.v1.Secret(
        PASSWORDS_SECRET,
        metadata=k8s.meta.v1.ObjectMetaArgs(name=PASSWORDS_SECRET, namespace=namespace),
        string_data=passwords.apply(
            lambda given: {password_env(user): value for user, value in given.items()}
        ),
        type="Opaque",
        opts=opts,
    )
    return k8s.helm.v3.Release(
        "nats",
        k8s.helm.v3.ReleaseArgs(
            chart=CHART,
            version=CHART_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPO),
            namespace=namespace,
            values=chart_values(replicas, storage, prefix),
        ),
        opts=pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(depends_on=[accounts, secret])
        ),
    )
