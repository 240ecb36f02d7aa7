# One image for every Sophia process: the agents (`python -m agents.<name>`) and the edge
# (`python -m edge`). compose.yaml and the Kubernetes stack (infra/stacks/sophia_k8s) pick
# the process with the command. Non-root, pinned base; the embedding model comes from a
# package (nothing is downloaded at run time). Python packages are pinned by
# ops/docker/constraints.txt (`scripts/constraints` writes it from a tested environment).
#
#   docker build -t sophia:0.1.0 .
FROM python:3.11.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ops/docker/constraints.txt ./
COPY adapters adapters
COPY agents agents
COPY bus bus
COPY edge edge
COPY infra infra
COPY memory memory
COPY ops ops
COPY tasks tasks
RUN python -m venv /opt/sophia \
    && /opt/sophia/bin/pip install --upgrade "pip==24.3.1" \
    && /opt/sophia/bin/pip install -c constraints.txt ".[cpu]"

FROM python:3.11.11-slim-bookworm

# git: the coder works in git worktrees of the target repository. Debian's security archive
# keeps only the latest bookworm revision, so pinning one would break the build at its next
# update; the base image tag fixes the release.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 sophia \
    && useradd --system --uid 10001 --gid sophia --home-dir /var/lib/sophia --create-home sophia
COPY --from=build /opt/sophia /opt/sophia
ENV PATH=/opt/sophia/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SOPHIA_HOME=/var/lib/sophia \
    HF_HUB_OFFLINE=1
USER 10001:10001
WORKDIR /var/lib/sophia
# the edge's port (SOPHIA_EDGE_BIND) and the metrics port (SOPHIA_METRICS_BIND)
EXPOSE 8420 9464
# each service in compose.yaml states its own healthcheck; this one fits the edge
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8420/healthz', timeout=2)"]
CMD ["python", "-m", "edge"]
