"""Entry point the Pulumi CLI runs (``pulumi up`` in this directory, or the infra agent)."""

from infra.stacks.sophia_k8s.program import deploy

deploy()
