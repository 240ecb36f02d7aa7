"""Qdrant Edge's write-ahead log stays bounded while the memory agent runs: the tier flushes
every ``FLUSH_EVERY_WRITES`` writes, so the log drops the files it no longer needs (Edge itself
flushes on no timer; the soak found the log growing by about 4 KiB a write, for good)."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import pytest

from memory.tiers.base import VectorPoint
from memory.tiers.vector_edge import EdgeVectorTier

pytestmark = pytest.mark.anyio

DIM = 8
NOTE = "n" * 48_000  # a large payload, so a few thousand writes fill several log files
HELD = 50
WRITES = 2_800  # about 130 MiB of log records: four 32 MiB log files
#: the log's bound: the file being written and the one closed file it keeps (32 MiB each)
LOG_BOUND_MIB = 72


def allocated_mib(folder: Path) -> float:
    """Disk space the files under ``folder`` take (the log's files are sparse)."""
    return sum(f.stat().st_blocks * 512 for f in folder.rglob("*") if f.is_file()) / 2**20


async def test_the_write_ahead_log_drops_what_a_flush_persisted(tmp_path: Path) -> None:
    tier = EdgeVectorTier(tmp_path / "shard", DIM)
    await tier.open()
    rng = np.random.default_rng(14)
    held: deque[str] = deque()
    try:
        for n in range(WRITES):
            point_id = f"00000000-0000-4000-8000-{n:012d}"
            vector = rng.random(DIM, dtype=np.float32)
            await tier.upsert([VectorPoint(point_id, vector, {"ns": "soak", "text": NOTE})])
            held.append(point_id)
            if len(held) > HELD:
                await tier.delete([held.popleft()])
        assert await tier.count() == HELD
        # the shard's own layout: its log lives in "wal" (files of 32 MiB, allocated as written)
        assert allocated_mib(tmp_path / "shard" / "wal") < LOG_BOUND_MIB
    finally:
        await tier.close()
    reopened = EdgeVectorTier(tmp_path / "shard", DIM)
    await reopened.open()
    try:
        assert await reopened.ids() == set(held)  # nothing a flush let go of was still needed
    finally:
        await reopened.close()
