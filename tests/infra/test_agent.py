"""The infra agent over the bus: operations through the real Automation API up to the CLI."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import anyio
import msgspec
import pytest

from agents.infra import InfraAgent
from bus import Bus, Settings
from bus.client import raise_for_service_error
from bus.errors import BadRequestError, ConflictError, NotFoundError, UnavailableError
from bus.schemas import infra as s
from infra.config import InfraSettings
from infra.workspace import Workspaces
from tests.fixtures.nats_server import running
from tests.infra.harness import CANARY, Infra, audit_trail, decode_progress, make_programs

pytestmark = pytest.mark.anyio


async def call(bus: Bus, endpoint: str, body: dict[str, object], reply: type) -> object:
    """One request with a raw JSON body (so bad input reaches the agent as sent)."""
    msg = await bus.request_raw(
        bus.subjects.endpoint("infra", endpoint), json.dumps(body).encode(), timeout=10
    )
    raise_for_service_error(msg)
    return msgspec.json.decode(msg.data, type=reply)


async def test_infra_up_streams_engine_progress_and_audits(infra: Infra) -> None:
    bus = infra.bus
    inbox = bus.nc.new_inbox()
    sub = await bus.nc.subscribe(inbox)
    result = await call(
        bus, "up", {"stack": "scratch", "progress_subject": inbox}, s.OperationResult
    )
    await bus.nc.flush()
    lines = []
    while sub.pending_msgs:
        lines.append(decode_progress((await sub.next_msg(timeout=1)).data))
    events = await audit_trail(bus, "scratch")
    up = [c.args for c in infra.cli.calls if c.args[0] == "up"]
    assert result.state == "succeeded" and result.changes == {"create": 5}
    assert result.steps == 5
    assert "create kubernetes:apps/v1:Deployment planner" in [p.message for p in lines]
    assert lines[-1].message == "done: create 5"
    assert [e.phase for e in events] == ["started", "succeeded"]
    assert events[1].changes == {"create": 5} and events[1].op_id == result.op_id
    assert len(up) == 1 and "--event-log" in up[0] and "--skip-preview" in up[0]


@pytest.mark.parametrize("operation", ["preview", "refresh", "destroy"])
async def test_infra_operations_run_their_pulumi_command(infra: Infra, operation: str) -> None:
    result = await call(infra.bus, operation, {"stack": "scratch"}, s.OperationResult)
    ran = [c.args[0] for c in infra.cli.calls if c.args[0] == operation]
    assert result.state == "succeeded" and result.operation == operation
    assert ran == [operation]


async def test_infra_uses_the_local_backend_under_sophia_home(
    infra: Infra, settings: Settings
) -> None:
    await call(infra.bus, "preview", {"stack": "scratch"}, s.OperationResult)
    backends = {c.env.get("PULUMI_BACKEND_URL") for c in infra.cli.calls}
    expected = (Path(settings.home) / "pulumi").resolve().as_uri()
    assert backends == {expected}


@pytest.mark.parametrize("operation", ["up", "destroy"])
async def test_infra_protected_stack_needs_confirm(infra: Infra, operation: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        await call(infra.bus, operation, {"stack": "sophia_k8s", "confirm": "x"}, dict)
    done = await call(
        infra.bus, operation, {"stack": "sophia_k8s", "confirm": "sophia_k8s"}, s.OperationResult
    )
    assert refused.value.description.startswith("confirm:")
    assert done.state == "succeeded"


async def test_infra_scale_sets_replicas_then_runs_up(infra: Infra) -> None:
    infra.cli.events["up"] = "scale"
    result = await call(
        infra.bus,
        "scale",
        {"stack": "scratch", "agent": "planner", "replicas": 3},
        s.OperationResult,
    )
    sets = [c.args for c in infra.cli.calls if c.args[:2] == ["config", "set"]]
    events = await audit_trail(infra.bus, "scratch")
    assert result.state == "succeeded" and result.changes == {"same": 4, "update": 1}
    assert sets == [["config", "set", "--path", "replicas.planner", "--plaintext", "--stack", "dev",
                     "--", "3"]]  # fmt: skip
    assert events[-1].detail == {"agent": "planner", "replicas": "3"}


async def test_infra_one_operation_per_stack(infra: Infra) -> None:
    infra.cli.gate = threading.Event()
    first = await call(infra.bus, "up", {"stack": "scratch", "wait_s": 0}, s.OperationResult)
    with pytest.raises(ConflictError) as busy:
        await call(infra.bus, "refresh", {"stack": "scratch"}, s.OperationResult)
    listed = await call(infra.bus, "stacks", {}, s.StackList)
    infra.cli.gate.set()

    async def finished() -> bool:
        found = await call(infra.bus, "stacks", {}, s.StackList)
        scratch = next(x for x in found.stacks if x.name == "scratch")
        return not scratch.running and scratch.last is not None and scratch.last.phase != "started"

    with anyio.fail_after(15):
        while not await finished():  # noqa: ASYNC110 — the state lives in the agent
            await anyio.sleep(0.05)
    after = await call(infra.bus, "refresh", {"stack": "scratch"}, s.OperationResult)
    running = {x.name: x.running for x in listed.stacks}
    assert first.state == "running"
    assert busy.value.code == 409 and first.op_id in busy.value.description
    assert running == {"scratch": True, "sophia_k8s": False}
    assert after.state == "succeeded"


async def test_infra_stacks_lists_programs_with_protection_and_last_result(infra: Infra) -> None:
    done = await call(infra.bus, "preview", {"stack": "scratch"}, s.OperationResult)
    listed = await call(infra.bus, "stacks", {}, s.StackList)
    by_name = {x.name: x for x in listed.stacks}
    assert {n: x.protected for n, x in by_name.items()} == {"scratch": False, "sophia_k8s": True}
    assert by_name["scratch"].last is not None
    assert (by_name["scratch"].last.op_id, by_name["scratch"].last.phase) == (
        done.op_id,
        "succeeded",
    )
    assert by_name["sophia_k8s"].last is None and listed.pulumi == "available"


async def test_infra_secrets_never_leave_the_agent(
    infra: Infra, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    infra.cli.events["up"] = "up_failed"
    infra.cli.fail.add("up")
    inbox = infra.bus.nc.new_inbox()
    sub = await infra.bus.nc.subscribe(inbox)
    failed = await call(
        infra.bus, "up", {"stack": "scratch", "progress_subject": inbox}, s.OperationResult
    )
    outputs = await call(infra.bus, "outputs", {"stack": "scratch"}, s.Outputs)
    await infra.bus.nc.flush()
    progress = []
    while sub.pending_msgs:
        progress.append((await sub.next_msg(timeout=1)).data.decode())
    events = [msgspec.json.encode(e).decode() for e in await audit_trail(infra.bus, "scratch")]
    said = [msgspec.json.encode(failed).decode(), msgspec.json.encode(outputs).decode()]
    assert failed.state == "failed" and "admission webhook denied" in failed.message
    assert "[secret]" in failed.message
    assert outputs.outputs["token"] == s.OutputValue(value="[secret]", secret=True)
    assert outputs.outputs["endpoint"].value == "http://edge.sophia:8420"
    assert progress and events
    for text in [*said, *progress, *events, caplog.text]:
        assert CANARY not in text


@pytest.mark.parametrize(
    ("endpoint", "body", "field"),
    [
        ("scale", {"stack": "scratch", "agent": "planner", "replicas": -1}, "replicas"),
        ("scale", {"stack": "scratch", "agent": "a.b", "replicas": 1}, "agent"),
        ("up", {"stack": "no/such"}, "stack"),
        ("up", {"stack": "scratch", "progress_subject": "sophia.tasks.get"}, "progress_subject"),
        ("preview", {"stack": "scratch", "env": "has space"}, "env"),
    ],
    ids=["replicas", "agent", "stack-shape", "progress-subject", "env"],
)
async def test_infra_bad_input_is_400_naming_the_field(
    infra: Infra, endpoint: str, body: dict[str, object], field: str
) -> None:
    with pytest.raises(BadRequestError) as bad:
        await call(infra.bus, endpoint, body, s.OperationResult)
    assert field in bad.value.description


async def test_infra_unknown_stack_is_404(infra: Infra) -> None:
    with pytest.raises(NotFoundError) as missing:
        await call(infra.bus, "outputs", {"stack": "nowhere"}, s.Outputs)
    assert "stack" in missing.value.description


async def test_infra_without_pulumi_answers_503_naming_the_install(
    settings: Settings, bus: Bus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    config = InfraSettings(infra_stacks_dir=str(make_programs(tmp_path / "stacks")))
    agent = InfraAgent(settings, config, Workspaces(settings, config, environ={}))
    async with running(agent):
        with pytest.raises(UnavailableError) as missing:
            await call(bus, "up", {"stack": "scratch"}, s.OperationResult)
        listed = await call(bus, "stacks", {}, s.StackList)
    assert "https://get.pulumi.com" in missing.value.description
    assert "https://www.pulumi.com/docs/install/" in missing.value.description
    assert listed.pulumi == missing.value.description and len(listed.stacks) == 2
