"""``python -m ops.probe``: the per-replica health check of containers and pods."""

from __future__ import annotations

import anyio
import pytest

from bus import Settings
from ops import probe
from tests.bus.agents import EchoAgent

pytestmark = pytest.mark.anyio


async def run_probe(*argv: str) -> int:
    return await anyio.to_thread.run_sync(probe.main, list(argv))


async def test_probe_passes_when_this_host_runs_the_service(
    echo: EchoAgent, cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_probe("echo") == 0
    assert f"echo: ok ({echo.id})" in capsys.readouterr().out


async def test_probe_fails_for_a_service_with_no_instance_here(
    echo: EchoAgent, cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_probe("memory", "--window", "0.3") == probe.EXIT_UNHEALTHY
    assert "no instance" in capsys.readouterr().out


async def test_probe_counts_only_this_install(
    echo: EchoAgent, cli_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOPHIA_PREFIX", "someone_else")
    assert await run_probe("echo", "--window", "0.3") == probe.EXIT_UNHEALTHY


async def test_probe_reports_unreachable_nats(
    cli_env: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ops.natsserver import free_port

    monkeypatch.setenv("SOPHIA_NATS_URL", f"nats://127.0.0.1:{free_port()}")
    assert await run_probe("echo") == probe.EXIT_UNREACHABLE
    assert "not reachable" in capsys.readouterr().out


async def test_probe_refuses_a_bad_service_name(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        await run_probe("no.such")
    assert exited.value.code == 2
    assert "service name" in capsys.readouterr().err
