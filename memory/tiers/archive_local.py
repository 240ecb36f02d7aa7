"""L4 embedded: one file per key under a directory, written atomically."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import anyio.to_thread


def _safe_name(key: str) -> str:
    # Keys come from ids and namespaces; hashing keeps any key a single safe file name.
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{digest[:2]}/{digest}"


class LocalArchiveTier:
    """Bodies under ``root``; a write is visible only once complete (rename after fsync)."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    async def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    async def put(self, key: str, data: bytes) -> None:
        await anyio.to_thread.run_sync(self._put, key, data)

    def _put(self, key: str, data: bytes) -> None:
        path = self.root / _safe_name(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    async def get(self, key: str) -> bytes | None:
        path = self.root / _safe_name(key)
        try:
            return await anyio.to_thread.run_sync(path.read_bytes)
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> None:
        (self.root / _safe_name(key)).unlink(missing_ok=True)

    async def count(self) -> int:
        return sum(1 for p in self.root.glob("*/*") if p.suffix != ".tmp")
