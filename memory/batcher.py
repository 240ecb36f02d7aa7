"""Dynamic batching: concurrent embed calls coalesce into one model run.

The first caller to find no open batch leads it: it lets callers of the same moment join
(and lingers up to ``max_wait_ms`` for more, 0 by default), then waits for the model —
while another batch runs, its own batch keeps filling — and runs the whole batch in a
worker thread (so the event loop keeps serving), handing every follower its rows.
Thirty-two concurrent callers cost about one run, not thirty-two; a lone caller waits
for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import anyio.to_thread
import numpy as np

from memory.embedder import Embedder


@dataclass(slots=True)
class _Batch:
    texts: list[str] = field(default_factory=list)
    full: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


class BatchingEmbedder:
    """Async front of an :class:`Embedder` that coalesces concurrent calls.

    Guarantee: ``await embed(texts)`` returns exactly the rows for ``texts``, in order;
    one model run at a time (a capacity-1 limiter), off the event loop.
    """

    def __init__(self, embedder: Embedder, *, max_batch: int = 32, max_wait_ms: float = 0.0):
        self.embedder = embedder
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self._open: _Batch | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self.runs = 0  # model runs so far (for stats and tests)
        self.calls = 0

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def dim(self) -> int:
        return self.embedder.dim

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``, sharing a model run with whoever else asks meanwhile."""
        self.calls += 1
        if len(texts) >= self.max_batch:
            return await self._bulk(texts)
        batch = self._open
        if batch is not None and len(batch.texts) + len(texts) <= self.max_batch:
            start = len(batch.texts)
            batch.texts.extend(texts)
            if len(batch.texts) >= self.max_batch:
                batch.full.set()
            await batch.done.wait()
            return _rows(batch, start, len(texts))
        return await self._lead(texts)

    async def embed_one(self, text: str) -> np.ndarray:
        return (await self.embed([text]))[0]

    async def _lead(self, texts: list[str]) -> np.ndarray:
        batch = _Batch(texts=list(texts))
        self._open = batch
        with anyio.CancelScope(shield=True):
            try:
                await self._gather(batch)
                async with self._limiter:  # while a run is under way, the batch keeps filling
                    if self._open is batch:
                        self._open = None
                    batch.result = await self._run(batch.texts)
            except Exception as exc:  # handed to every follower, then re-raised
                batch.error = exc
            finally:
                if self._open is batch:
                    self._open = None
                batch.done.set()
        return _rows(batch, 0, len(texts))

    async def _bulk(self, texts: list[str]) -> np.ndarray:
        """A big call, one model run per ``max_batch`` (similar lengths together).

        The model is taken batch by batch, so a search waits for one batch of an
        indexing run, not for all of it (the limiter is first come, first served).
        """
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.max_batch):
            idx = order[start : start + self.max_batch]
            async with self._limiter:
                out[idx] = await self._run([texts[i] for i in idx])
        return out

    async def _gather(self, batch: _Batch) -> None:
        """Let callers of this same moment join; linger up to max_wait for more."""
        await anyio.lowlevel.checkpoint()
        if self.max_wait_s > 0 and len(batch.texts) < self.max_batch:
            with anyio.move_on_after(self.max_wait_s):
                await batch.full.wait()

    async def _run(self, texts: list[str]) -> np.ndarray:
        self.runs += 1
        return await anyio.to_thread.run_sync(self.embedder.embed, texts)


def _rows(batch: _Batch, start: int, count: int) -> np.ndarray:
    if batch.error is not None:
        raise batch.error
    assert batch.result is not None  # set whenever error is None
    return batch.result[start : start + count]
