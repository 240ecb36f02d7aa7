"""The soak's durable-work agent (service ``soak``): each item awaits 20 ms (an I/O-bound step)
and then publishes its number on ``<prefix>.bench.soak.done``, so the soak measures each
item's latency from its publish to the end of its handler.

    python -m bus.runner bench.soak_worker
"""

from __future__ import annotations

import anyio
import msgspec

from bus import Agent, work

HANDLER_S = 0.02


class SoakItem(msgspec.Struct, kw_only=True):
    n: int
    note: str = ""


def done_subject(prefix: str) -> str:
    return f"{prefix}.bench.soak.done"


class SoakWorker(Agent, name="soak"):
    """Takes the soak's durable work items."""

    @work
    async def handle(self, item: SoakItem) -> None:
        await anyio.sleep(HANDLER_S)
        await self.nc.publish(done_subject(self.settings.prefix), str(item.n).encode())
