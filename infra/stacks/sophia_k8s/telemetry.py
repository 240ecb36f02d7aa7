"""An OpenTelemetry collector in the namespace: OTLP in (4317 gRPC, 4318 HTTP), traces out.

The agents export to it (``OTEL_EXPORTER_OTLP_ENDPOINT``). With ``otlpUpstream`` set it
forwards over OTLP there (Tempo, a vendor); without, it logs what it gets (the ``debug``
exporter), so a bare cluster still works.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_kubernetes as k8s

IMAGE = "otel/opentelemetry-collector-contrib:0.117.0"
LABELS = {"app.kubernetes.io/name": "otel-collector", "app.kubernetes.io/part-of": "sophia"}


def collector_config(upstream: str) -> dict[str, object]:
    exporters: dict[str, object] = (
        {"otlp": {"endpoint": upstream, "tls": {"insecure": True}}}
        if upstream
        else {"debug": {"verbosity": "basic"}}
    )
    pipeline = {"receivers": ["otlp"], "processors": ["batch"], "exporters": list(exporters)}
    return {
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": "0.0.0.0:4317"},
                    "http": {"endpoint": "0.0.0.0:4318"},
                }
            }
        },
        "processors": {"batch": {}},
        "exporters": exporters,
        "extensions": {"health_check": {"endpoint": "0.0.0.0:13133"}},
        "service": {
            "extensions": ["health_check"],
            "pipelines": {"traces": pipeline, "metrics": pipeline},
        },
    }


def otel_collector(
    namespace: pulumi.Input[str], upstream: str, opts: pulumi.ResourceOptions
) -> k8s.core.v1.Service:
    meta = k8s.meta.v1.ObjectMetaArgs(name="otel-collector", namespace=namespace, labels=LABELS)
    config = k8s.core.v1.ConfigMap(
        "otel-collector",
        metadata=meta,
        data={"config.yaml": json.dumps(collector_config(upstream), indent=2)},  # JSON is YAML
        opts=opts,
    )
    probe = k8s.core.v1.ProbeArgs(
        http_get=k8s.core.v1.HTTPGetActionArgs(path="/", port=13133), period_seconds=10
    )
    container = k8s.core.v1.ContainerArgs(
        name="otel-collector",
        image=IMAGE,
        args=["--config=/etc/otelcol/config.yaml"],
        ports=[
            k8s.core.v1.ContainerPortArgs(name="otlp-grpc", container_port=4317),
            k8s.core.v1.ContainerPortArgs(name="otlp-http", container_port=4318),
        ],
        resources=k8s.core.v1.ResourceRequirementsArgs(
            requests={"cpu": "100m", "memory": "128Mi"}, limits={"cpu": "500m", "memory": "512Mi"}
        ),
        readiness_probe=probe,
        liveness_probe=probe,
        volume_mounts=[k8s.core.v1.VolumeMountArgs(name="config", mount_path="/etc/otelcol")],
    )
    k8s.apps.v1.Deployment(
        "otel-collector",
        metadata=meta,
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=1,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=LABELS),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=LABELS),
                spec=k8s.core.v1.PodSpecArgs(
                    containers=[container],
                    volumes=[
                        k8s.core.v1.VolumeArgs(
                            name="config",
                            config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                                name=config.metadata.name
                            ),
                        )
                    ],
                ),
            ),
        ),
        opts=opts,
    )
    return k8s.core.v1.Service(
        "otel-collector",
        metadata=meta,
        spec=k8s.core.v1.ServiceSpecArgs(
            selector=LABELS,
            ports=[
                k8s.core.v1.ServicePortArgs(name="otlp-grpc", port=4317, target_port=4317),
                k8s.core.v1.ServicePortArgs(name="otlp-http", port=4318, target_port=4318),
            ],
        ),
        opts=opts,
    )
