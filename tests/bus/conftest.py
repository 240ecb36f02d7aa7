"""Shared fixtures for the bus tests: a plain client on the test's prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest

from bus import Bus, Settings
from bus.topology import ensure_streams


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[Bus]:
    """A Bus on the test's prefix, with its streams and buckets created."""
    nc = await nats.connect(settings.nats_url)
    client = Bus(nc, settings)
    await ensure_streams(client.js, settings)
    yield client
    await nc.drain()
