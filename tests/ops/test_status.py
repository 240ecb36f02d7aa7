"""``sophia status``: running instances as the service API reports them, lag, dead letters."""

from __future__ import annotations

import json
import time

import pytest

from bus import Bus, Settings
from bus.topology import ensure_consumer
from ops.commands.status import render
from ops.natsserver import free_port
from ops.stack import ProgramState, StackState
from ops.survey import DlqStatus, NatsStatus, Report
from tests.bus.agents import EchoAgent, EchoReply, EchoRequest, Job, Worker
from tests.ops.conftest import Sophia
from tests.polling import wait_for

pytestmark = pytest.mark.anyio


async def test_status_json_lists_each_instance_as_srv_info_describes_it(
    echo: EchoAgent, worker: Worker, bus: Bus, sophia: Sophia
) -> None:
    await bus.request("echo", "say", EchoRequest(text="a"), EchoReply)
    run = await sophia("status", "--json")
    assert run.status == 0, run.err
    report = json.loads(run.out)
    info = json.loads((await bus.nc.request(f"$SRV.INFO.echo.{echo.id}", b"", timeout=5)).data)
    by_name = {s["name"]: s for s in report["services"]}
    assert set(by_name) == {"echo", "worker"}  # only this install's prefix
    service = by_name["echo"]
    assert (service["id"], service["version"], service["description"]) == (
        info["id"],
        info["version"],
        info["description"],
    )
    assert {e["name"] for e in service["endpoints"]} == {e["name"] for e in info["endpoints"]}
    assert service["requests"] == 1
    assert service["errors"] == 0
    assert by_name["worker"]["id"] == worker.id


async def test_status_json_reports_streams_consumer_lag_and_dlq(
    settings: Settings, worker: Worker, bus: Bus, sophia: Sophia
) -> None:
    await ensure_consumer(bus.js, settings, "idle")  # nobody pulls: its items wait
    for i in range(3):
        await bus.submit_work("idle", Job(id=f"i{i}"), msg_id=f"i{i}")
    await bus.submit_work("worker", Job(id="b", bad=True), msg_id="b")
    await wait_for(lambda: worker.dead_lettered_count() == 1)
    run = await sophia("status", "--json")
    report = json.loads(run.out)
    consumers = {c["name"]: c for c in report["consumers"]}
    assert consumers["idle"]["num_pending"] == 3
    assert consumers["idle"]["ack_pending"] == 0
    streams = {s["name"]: s for s in report["streams"]}
    subjects = bus.subjects
    assert streams[subjects.work_stream]["messages"] == 3
    assert all(s["exists"] for s in streams.values())
    assert report["dlq"] == {
        "stream": subjects.dlq_stream,
        "messages": 1,
        "by_service": {"worker": 1},
    }


async def test_status_table_names_services_streams_and_dlq(
    echo: EchoAgent, sophia: Sophia, settings: Settings
) -> None:
    run = await sophia("status")
    assert run.status == 0, run.err
    assert f"prefix {settings.prefix}" in run.out
    [row] = [line for line in run.out.splitlines() if line.startswith("echo ")]
    assert echo.id in row
    assert f"{settings.prefix.upper()}_WORK" in run.out
    assert "DLQ" in run.out


async def test_status_exits_3_with_a_message_when_nats_is_unreachable(
    sophia: Sophia, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    monkeypatch.setenv("SOPHIA_NATS_URL", url)
    run = await sophia("status")
    assert run.status == 3
    assert f"NATS is not reachable at {url}" in run.err
    assert run.out == ""


def _report_with(programs: list[ProgramState]) -> Report:
    stack = StackState(
        pid=1,
        phase="running",
        home="/h",
        nats_url="nats://127.0.0.1:4222",
        nats_started=False,
        nats_dir="/h/nats",
        edge_url=None,
        supervisor_log="/h/logs/supervisor.log",
        programs=programs,
        crash_limit=5,
        crash_window_s=60.0,
    )
    return Report(
        prefix="sophia",
        nats=NatsStatus(url="nats://127.0.0.1:4222", server_version="2.10.0", rtt_ms=0.1),
        services=[],
        streams=[],
        consumers=[],
        dlq=DlqStatus(stream="SOPHIA_DLQ", messages=0, by_service={}),
        stack=stack,
    )


def test_status_shows_a_crash_loop_also_while_the_program_is_up_between_crashes() -> None:
    looping = ProgramState(
        name="coder",
        kind="agent",
        status="running",  # just restarted: it dies again in a moment
        restarts=3,
        last_exit=2,
        last_exit_at=time.time() - 1,
        crashes=3,
        log="/h/logs/coder.log",
    )
    steady = ProgramState(name="tasks", kind="agent", status="running", log="/h/logs/tasks.log")
    text = render(_report_with([looping, steady]))
    assert "all 2 programs running" not in text
    assert "2 of 2 programs running" in text
    assert (
        "  coder: running (restarts 3, last exit 2) — crash loop: 3 crashes within 60 s, "
        "left down at 5, exited 1s ago; log /h/logs/coder.log"
    ) in text
    assert "tasks:" not in text  # a program that never restarted needs no line
