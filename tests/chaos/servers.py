"""nats-servers of the chaos scenarios' own: one with a small JetStream storage quota."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ops.natsserver import NatsServer


@dataclass
class QuotaNatsServer(NatsServer):
    """:class:`NatsServer` whose JetStream may keep at most ``max_file_store`` on disk."""

    max_file_store: str = "1MB"

    def command(self) -> list[str]:
        config = self.store_dir.parent / f"{self.store_dir.name}.conf"
        config.write_text(f"jetstream {{ max_file_store: {self.max_file_store} }}\n")
        return [*super().command(), "-c", str(config)]


@contextmanager
def quota_nats(root: Path, max_file_store: str) -> Iterator[NatsServer]:
    """A nats-server for one test whose file storage holds ``max_file_store``; stopped after."""
    root.mkdir(parents=True, exist_ok=True)
    server = QuotaNatsServer(store_dir=root / "js", max_file_store=max_file_store)
    server.start()
    try:
        yield server
    finally:
        server.stop()
