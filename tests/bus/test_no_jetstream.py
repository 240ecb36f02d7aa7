"""A nats-server started without JetStream: agents and the edge exit 1 with one line naming it.

Every process runs ``ensure_streams`` at start. Before, JetStream's silence surfaced as a
nats-py ServiceUnavailableError wrapped in the task group's ExceptionGroup: 60 lines of
traceback, with nothing saying ``-js`` was missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.natsserver import NatsServer, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bare_nats_url(tmp_path: Path) -> Iterator[str]:
    """A nats-server on a free port with JetStream off (no ``-js``), stopped afterwards."""
    server = NatsServer(store_dir=tmp_path / "unused", jetstream=False)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("module", "name"), [("tests.bus.worker_main", "worker"), ("edge", "edge")]
)
def test_a_process_on_a_server_without_jetstream_exits_1_naming_it(
    bare_nats_url: str, tmp_path: Path, module: str, name: str
) -> None:
    env = {
        **os.environ,
        "SOPHIA_NATS_URL": bare_nats_url,
        "SOPHIA_HOME": str(tmp_path),
        "SOPHIA_EDGE_BIND": f"127.0.0.1:{free_port()}",
        "DONE_FILE": str(tmp_path / "done.txt"),
        "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])),
    }
    finished = subprocess.run(
        [sys.executable, "-m", module], env=env, cwd=ROOT, capture_output=True, timeout=60
    )
    errors = finished.stderr.decode(errors="replace")
    assert finished.returncode == 1, errors
    expected = f"sophia {name}: JetStream does not answer at {bare_nats_url}; is it enabled (-js)?"
    assert expected in errors.splitlines()
    assert "Traceback" not in errors
