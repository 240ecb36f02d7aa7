"""Sophia on Kubernetes with ``pulumi-kubernetes``; the program is :func:`program.deploy`.

Health probes: every agent gets an *exec* probe, ``python -m ops.probe <service>``, because an
agent's health lives on the bus (its micro service answers ``$SRV.PING`` with the pod's
hostname), not on an HTTP port: the probe asks NATS whether this very pod's instance
answers. The edge, which serves HTTP anyway, gets HTTP probes (``/healthz`` for liveness,
``/readyz`` for readiness). Config (:mod:`.settings`) comes from Pulumi config of the stack;
every value set as a secret (``pulumi config set --secret --path secrets.X …``) goes to one
Kubernetes Secret only, never to the ConfigMap or a plain env value.
"""
