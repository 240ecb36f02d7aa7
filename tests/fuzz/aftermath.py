"""What must still hold once a batch of fuzz inputs is through: every agent answers
``$SRV.PING``, the edge is ready, and every accepted write reads back."""

from __future__ import annotations

import json

import httpx
from nats.aio.client import Client

from tests.fuzz.channels import over_bus
from tests.fuzz.stack import SERVICES, Stack
from tests.fuzz.targets import ping_counts
from tests.fuzz.verdicts import Tally, Writes

#: how a write is read back: (endpoint to ask, what the reply must say)
READERS = {
    "memory.store": "memory.get",
    "memory.session.save": "memory.session.load",
    "tasks.submit": "tasks.get",
}


async def read_back(nc: Client, stack: Stack, writes: Writes, tally: Tally) -> list[str]:
    """Read every noted write back over the bus; the problems found. A task read back is
    cancelled after (the fuzz wants its record, not its patch)."""
    problems = []
    for target_id, key in writes.items:
        service, _, tail = READERS[target_id].partition(".")
        subject = stack.subjects.endpoint(service, tail)
        reply = await over_bus(nc, subject, json.dumps(key).encode())
        readable = reply.status == 200 and _found(target_id, reply.json())
        if not readable:
            tally.unreadable += 1
            problems.append(f"{target_id} {key}: read back {reply.status} {reply.error!r}")
        else:
            tally.read_back += 1
        if target_id == "tasks.submit":
            cancel = stack.subjects.endpoint("tasks", "cancel")
            await over_bus(nc, cancel, json.dumps(key).encode())
    writes.items.clear()
    return problems


def _found(target_id: str, value: dict[str, object]) -> bool:
    if target_id == "memory.session.load":
        return value.get("found") is True
    return True


async def still_serving(nc: Client, stack: Stack) -> list[str]:
    """Every service answers ``$SRV.PING`` as often as it runs, and the edge is ready."""
    counts = await ping_counts(nc, stack.settings.prefix, SERVICES)
    problems = [
        f"{name}: {counts.get(name, 0)} of {n} instances answer $SRV.PING"
        for name, n in SERVICES.items()
        if counts.get(name, 0) < n
    ]
    async with httpx.AsyncClient(base_url=stack.edge_url, timeout=10) as client:
        ready = await client.get("/readyz")
    if ready.status_code != 200:
        problems.append(f"edge /readyz: {ready.status_code}")
    return problems


def settle(stack: Stack, writes: Writes, tally: Tally) -> list[str]:
    """Both checks, from a test's thread; the problems found."""

    async def both() -> list[str]:
        return await still_serving(stack.nc, stack) + await read_back(
            stack.nc, stack, writes, tally
        )

    return stack.call(both)
