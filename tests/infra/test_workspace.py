"""Backends, programs and the CLI boundary of the infra workspace (no NATS needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pulumi import automation as auto

from bus import Settings
from bus.config import load
from bus.errors import ConfigError, NotFoundError
from infra.config import STACKS_DIR, InfraSettings
from infra.events import EventDigest, Redactor
from infra.workspace import Workspaces, backend_env, backend_name
from tests.fixtures.pulumi_command import ReplayingPulumiCommand
from tests.infra.harness import make_programs


@pytest.mark.parametrize(
    ("backend", "environ", "expected"),
    [
        ("", {}, "local"),
        ("", {"PULUMI_ACCESS_TOKEN": "pul-abc"}, None),
        ("s3://bucket/state", {"PULUMI_ACCESS_TOKEN": "pul-abc"}, "s3://bucket/state"),
    ],
    ids=["local-default", "cloud-with-token", "explicit-url"],
)
def test_backend_env_picks_local_cloud_or_explicit(
    tmp_path: Path, backend: str, environ: dict[str, str], expected: str | None
) -> None:
    settings = Settings(home=str(tmp_path / "home"))
    env = backend_env(settings, InfraSettings(infra_backend_url=backend), environ)
    if expected == "local":
        expected = (tmp_path / "home" / "pulumi").resolve().as_uri()
    assert env.get("PULUMI_BACKEND_URL") == expected
    assert "pul-abc" not in str(env)


def test_backend_name_masks_credentials() -> None:
    assert backend_name({"PULUMI_BACKEND_URL": "https://u:pw@state.example"}) == (
        "https://u:***@state.example"
    )
    assert backend_name({}) == "pulumi-cloud"


def test_programs_are_directories_with_a_pulumi_yaml(tmp_path: Path) -> None:
    root = make_programs(tmp_path)
    (root / "notes").mkdir()
    spaces = Workspaces(Settings(home=str(tmp_path)), InfraSettings(infra_stacks_dir=str(root)))
    with pytest.raises(NotFoundError):
        spaces.program("notes")
    assert [(p.name, p.protected) for p in spaces.programs()] == [
        ("scratch", False),
        ("sophia_k8s", True),
    ]


def test_the_shipped_stacks_include_sophia_k8s(tmp_path: Path) -> None:
    spaces = Workspaces(Settings(home=str(tmp_path)), InfraSettings(), environ={})
    assert STACKS_DIR.is_dir() and "sophia_k8s" in [p.name for p in spaces.programs()]


def test_infra_settings_reject_a_bad_lock_ttl() -> None:
    with pytest.raises(ConfigError) as bad:
        load(InfraSettings, {"SOPHIA_INFRA_LOCK_TTL_S": "1"})
    assert "SOPHIA_INFRA_LOCK_TTL_S" in str(bad.value)


def test_events_reach_on_event_through_a_file_log_on_older_clis(tmp_path: Path) -> None:
    """CLIs up to 3.205 write a file the Automation API tails; later ones stream over gRPC."""
    root = make_programs(tmp_path)
    cli = ReplayingPulumiCommand(version="3.200.0")
    options = auto.LocalWorkspaceOptions(pulumi_command=cli)
    stack = auto.create_or_select_stack("dev", work_dir=str(root / "scratch"), opts=options)
    digest = EventDigest(Redactor())
    stack.preview(on_event=digest.take)
    log = next(c.args for c in cli.calls if c.args[0] == "preview")
    assert not log[log.index("--event-log") + 1].startswith("tcp://")
    assert digest.steps == 5 and digest.changes == {"create": 5}


def test_redactor_masks_the_longest_secret_first() -> None:
    redact = Redactor(["abcd", "abcdefgh", "no"])
    assert redact("x abcdefgh y abcd z no") == "x [secret] y [secret] z no"


def test_programs_run_with_this_interpreter_first_on_path(tmp_path: Path) -> None:
    import sys

    settings = Settings(home=str(tmp_path / "home"))
    workspaces = Workspaces(settings, InfraSettings(), environ={"PATH": "/usr/bin:/bin"})
    first, *rest = workspaces.env_vars["PATH"].split(":")
    assert Path(first) == Path(sys.executable).parent
    assert rest == ["/usr/bin", "/bin"]
    project = yaml.safe_load((STACKS_DIR / "sophia_k8s" / "Pulumi.yaml").read_text())
    assert "virtualenv" not in project["runtime"].get("options", {})
