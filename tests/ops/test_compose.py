"""``compose.yaml`` and the ``Dockerfile``, checked without a Docker engine.

The file must be valid against the Compose Specification's JSON Schema (vendored in
tests/data/compose/, its source in SOURCE.md), and everything it names must exist and agree
with the code: images pinned or built from the Dockerfile, every mounted file in the
repository, every address pointing at a service of the file on a port that service listens
on, every variable a service needs set (and every secret only interpolated from ``.env``),
every agent module run by some service, every NATS user and password variable known to
ops/nats/.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import msgspec
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from adapters.lambdalabs import KEY_VARIABLE
from bus.config import ENV_PREFIX, Settings
from edge.config import EdgeSettings
from infra.config import InfraSettings
from infra.gpu import GpuSettings
from memory.config import MemorySettings
from ops.nats.permissions import password_env
from ops.stack import agent_modules
from tasks.config import TaskSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
SCHEMA = ROOT / "tests" / "data" / "compose" / "compose-spec.json"
NATS_CONF = ROOT / "ops" / "nats"
#: what each image listens on inside the network (from each image's documentation)
LISTENS = {
    "nats": {4222, 6222, 8222},
    "redis": {6379},
    "qdrant": {6333, 6334},
    "postgres": {5432},
    "minio": {9000, 9001},
    "otel-collector": {4317, 4318, 8889},
    "tempo": {3200, 4317, 4318},
    "prometheus": {9090},
    "grafana": {3000},
    "sophia": {8420, 9464},  # the edge's bind and every process's metrics bind
}
#: every Sophia process needs these (the cluster, its own NATS user, R3 streams, metrics)
SOPHIA_NEEDS = {
    "SOPHIA_NATS_URL",
    "SOPHIA_NATS_USER",
    "SOPHIA_NATS_PASSWORD",
    "SOPHIA_STREAM_REPLICAS",
    "SOPHIA_METRICS_BIND",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
}
MEMORY_NEEDS = {
    "SOPHIA_REDIS_URL",
    "SOPHIA_QDRANT_URL",
    "SOPHIA_POSTGRES_DSN",
    "SOPHIA_S3_BUCKET",
    "SOPHIA_S3_ENDPOINT_URL",
}
#: variables read outside the settings classes (the llm and Lambda adapters, Pulumi, boto)
OTHER_KNOWN = {
    "SOPHIA_LLM_BASE_URL",
    "SOPHIA_LLM_MODEL",
    "SOPHIA_LLM_API_KEY",
    KEY_VARIABLE,
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_METRICS_EXPORTER",
    "PULUMI_ACCESS_TOKEN",
    "PULUMI_CONFIG_PASSPHRASE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PASSPHRASE")
#: a nats-server config variable (``$NAME``, not a subject such as ``$JS.API.>``)
VARIABLE = re.compile(r"\$([A-Z][A-Z0-9_]*)\b(?!\.)")
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?+][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # safe_load resolves the `<<` merge keys


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def sophia_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if "build" in s}


def kind(name: str, service: dict[str, Any]) -> str:
    if "build" in service:
        return "sophia"
    image = service["image"].split(":")[0]
    return "nats" if image == "nats" else name


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator(schema).validate(compose)  # its $schema: draft-07


def test_the_vendored_schema_names_its_source() -> None:
    source = (SCHEMA.parent / "SOURCE.md").read_text()
    assert "github.com/compose-spec/compose-spec" in source
    assert re.search(r"\b[0-9a-f]{40}\b", source), "the commit it was taken from"


def test_every_image_is_pinned_or_built_here(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image", "")
        assert image, f"{name}: no image"
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: {image}"
        if "build" in service:
            context = ROOT / (service["build"] if isinstance(service["build"], str) else ".")
            assert (context / "Dockerfile").is_file(), name


def test_the_dockerfile_is_pinned_and_runs_as_a_user() -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    bases = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
    assert bases and all(re.fullmatch(r"[\w./-]+:\d[\w.-]*", b) for b in bases), bases
    user = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert user and user[-1].split(":")[0] not in {"0", "root"}
    assert any(ln.startswith("HEALTHCHECK ") for ln in lines)
    copied = [ln.split()[1:-1] for ln in lines if ln.startswith("COPY ") and "--from" not in ln]
    for sources in copied:
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is missing"


def test_the_image_pins_every_runtime_dependency_within_pyproject() -> None:
    pins = {}
    for line in (ROOT / "ops" / "docker" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in [*project["dependencies"], *project["optional-dependencies"]["cpu"]]:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"sys_platform": "linux"}):
            continue
        pinned = pins.get(canonicalize_name(req.name))
        assert pinned, f"{req.name} is not pinned: python scripts/constraints.py"
        assert req.specifier.contains(pinned, prereleases=True), f"{req.name}=={pinned}: {req}"


def test_every_mounted_file_is_in_the_repository(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"


def test_host_ports_are_unique_and_published_by_what_listens(
    services: dict[str, dict[str, Any]],
) -> None:
    seen: dict[str, str] = {}
    for name, service in services.items():
        for mapping in service.get("ports", []):
            host, _, container = str(mapping).rpartition(":")
            assert host not in seen, f"{name} and {seen.get(host)} both publish {host}"
            seen[host] = name
            assert int(container) in LISTENS[kind(name, service)], f"{name}: {mapping}"


def addresses(value: str) -> list[tuple[str, int]]:
    """(host, port) of every URL in ``value`` (a comma-separated list too)."""
    found = []
    for part in value.strip("[]").split(","):
        parts = urlsplit(part.strip())
        if parts.scheme and parts.hostname and parts.port:
            found.append((parts.hostname, parts.port))
    return found


def test_every_address_points_at_a_service_of_the_file(
    services: dict[str, dict[str, Any]],
) -> None:
    hostnames = {s.get("hostname", n): n for n, s in services.items()}
    hostnames.update({n: n for n in services})
    checked = 0
    for name, service in services.items():
        for variable, value in (service.get("environment") or {}).items():
            for host, port in addresses(INTERPOLATION.sub("x", str(value))):
                target = hostnames.get(host)
                assert target, f"{name}: {variable} points at {host}, not a service here"
                assert port in LISTENS[kind(target, services[target])], f"{name}: {variable}"
                checked += 1
    assert checked >= 10


def test_every_sophia_process_gets_what_it_needs(services: dict[str, dict[str, Any]]) -> None:
    known = OTHER_KNOWN | {
        ENV_PREFIX + f.name.upper()
        for cls in (
            Settings,
            MemorySettings,
            EdgeSettings,
            TaskSettings,
            InfraSettings,
            GpuSettings,
        )
        for f in msgspec.structs.fields(cls)
    }
    for name, service in sophia_services(services).items():
        env = service["environment"]
        assert SOPHIA_NEEDS <= set(env), f"{name}: missing {SOPHIA_NEEDS - set(env)}"
        assert str(env["SOPHIA_STREAM_REPLICAS"]) == "3"
        unknown = {v for v in env if v not in known}
        assert not unknown, f"{name}: no Sophia setting reads {unknown}"
        assert "healthcheck" in service, name
    assert MEMORY_NEEDS <= set(services["memory"]["environment"])


def test_secrets_only_come_from_the_environment_file(compose: dict[str, Any]) -> None:
    listed = {
        line.split("=")[0].lstrip("# ")
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line
    }
    text = COMPOSE.read_text()
    for variable in INTERPOLATION.findall(text):
        assert variable in listed, f"${{{variable}}} is used but not in .env.example"
    for name, service in compose["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(variable):
                assert INTERPOLATION.fullmatch(str(value)), f"{name}: {variable} is written in"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_every_agent_runs_with_its_own_nats_user(services: dict[str, dict[str, Any]]) -> None:
    commands = {" ".join(s["command"]): n for n, s in sophia_services(services).items()}
    accounts = (NATS_CONF / "accounts.conf").read_text()
    for agent, module in {**agent_modules(), "edge": "edge"}.items():
        name = commands.get(f"python -m {module}")
        assert name, f"no service runs python -m {module}"
        user = services[name]["environment"]["SOPHIA_NATS_USER"]
        assert user == agent, f"{name} logs in as {user}; its service is {agent}"
        assert f'user: "{user}"' in accounts, f"{user} is not a user in ops/nats/accounts.conf"
        password = services[name]["environment"]["SOPHIA_NATS_PASSWORD"]
        assert INTERPOLATION.fullmatch(password).group(1) == password_env(user), name
    users = [s["environment"]["SOPHIA_NATS_USER"] for s in sophia_services(services).values()]
    assert len(users) == len(set(users)), "two services share one NATS user"


def test_every_nats_node_gets_every_variable_its_config_reads(
    services: dict[str, dict[str, Any]],
) -> None:
    wanted = {
        v for conf in NATS_CONF.glob("*.conf") for v in re.findall(VARIABLE, conf.read_text())
    }
    assert wanted
    nodes = {n: s for n, s in services.items() if kind(n, s) == "nats"}
    assert len(nodes) == 3
    for name, node in nodes.items():
        assert wanted <= set(node["environment"]), (
            f"{name}: missing {wanted - set(node['environment'])}"
        )
        assert any(v.endswith(":/etc/nats:ro") for v in node["volumes"])


def test_prometheus_scrapes_every_sophia_service(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load((ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    } | {
        f"{name}:{dns['port']}"
        for job in config["scrape_configs"]
        for dns in job.get("dns_sd_configs", [])
        for name in dns["names"]
    }
    for name in sophia_services(services):
        assert f"{name}:9464" in targets, f"Prometheus does not scrape {name}"
    for target in targets:
        assert target.split(":")[0] in services, f"Prometheus scrapes {target}: not a service"
