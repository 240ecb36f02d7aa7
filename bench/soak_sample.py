"""What the soak samples every 10 s from outside the processes: resident memory and open files
(Linux /proc), the work stream's consumer lag (JetStream consumer info) and what the streams
hold (JetStream stream info: nats-server's memory follows the messages it keeps)."""

from __future__ import annotations

import os
from pathlib import Path

import nats.errors

from bus.client import Bus


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (``VmRSS``); 0.0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def open_files(pid: int) -> int:
    """Open file descriptors of ``pid`` (sockets included); 0 when it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


async def consumer_lag(bus: Bus, consumers: list[str]) -> dict[str, int]:
    """``num_pending + num_ack_pending`` of each durable consumer on the work stream (-1 when
    it cannot be read this time)."""
    lag: dict[str, int] = {}
    for name in consumers:
        try:
            info = await bus.js.consumer_info(bus.subjects.work_stream, name, timeout=5.0)
        except (nats.errors.Error, TimeoutError):
            lag[name] = -1
            continue
        lag[name] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
    return lag


async def stream_sizes(bus: Bus) -> dict[str, float]:
    """Messages and MiB each stream of the install holds (-1 when it cannot be read)."""
    sizes: dict[str, float] = {}
    subjects = bus.subjects
    for label, stream in (
        ("work", subjects.work_stream),
        ("events", subjects.events_stream),
        ("dlq", subjects.dlq_stream),
    ):
        try:
            info = await bus.js.stream_info(stream)
        except (nats.errors.Error, TimeoutError):
            sizes[f"msgs_{label}"] = sizes[f"mb_{label}"] = -1
            continue
        sizes[f"msgs_{label}"] = int(info.state.messages)
        sizes[f"mb_{label}"] = round(info.state.bytes / 2**20, 2)
    return sizes
