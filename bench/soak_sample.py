"""What the soak samples every 10 s from outside the processes: resident memory, open files and
CPU time (Linux /proc; the machine's CPU time too, with what the hypervisor took: on a shared
machine a latency that moves with the steal moved with the neighbours), the work stream's
consumer lag (JetStream consumer info) and what the streams
hold (JetStream stream info: nats-server's memory follows the messages it keeps)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nats.errors

from bus.client import Bus


def resident_mb(pid: int) -> dict[str, float]:
    """Resident memory of ``pid`` in MiB (``/proc/PID/status``), zeros when it is gone:
    ``rss`` (``VmRSS``), and its parts ``anon`` (``RssAnon``: the heap, what a leak grows)
    and ``file`` (``RssFile``: pages of mapped files, such as Qdrant Edge's segments and
    write-ahead log, which the kernel can drop and read again)."""
    fields = {"VmRSS:": "rss", "RssAnon:": "anon", "RssFile:": "file"}
    sizes = dict.fromkeys(fields.values(), 0.0)
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name = line.split(maxsplit=1)[0] if line else ""
            if name in fields:
                sizes[fields[name]] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return sizes


def process_cpu_ticks(pid: int) -> int:
    """User and system CPU time of ``pid`` in clock ticks (``/proc/PID/stat``); 0 when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    after_name = text.rsplit(")", 1)[1].split()  # from field 3, the state
    return int(after_name[11]) + int(after_name[12])  # fields 14 and 15: utime, stime


def machine_cpu_ticks() -> tuple[int, int, int]:
    """(busy, stolen, total) clock ticks of the whole machine since boot (``/proc/stat``)."""
    first_line = Path("/proc/stat").read_text().split("\n", 1)[0]
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(x) for x in first_line.split()[1:9]
    )
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


class CpuMeter:
    """CPU use between two samples: each process's in percent of one core, the machine's busy
    and stolen time in percent of all of it."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.tick_s = 1 / os.sysconf("SC_CLK_TCK")
        self._last = self._read()

    def _read(self) -> tuple[float, dict[str, int], tuple[int, int, int]]:
        ticks = {name: process_cpu_ticks(pid) for name, pid in self.pids.items()}
        return time.monotonic(), ticks, machine_cpu_ticks()

    def sample(self) -> dict[str, float]:
        (then, before, machine_before), now = self._last, self._read()
        self._last = now
        at, after, machine_after = now
        elapsed = max(at - then, 1e-9)
        row = {
            f"cpu_pct_{name}": round(
                (after[name] - before.get(name, 0)) * self.tick_s / elapsed * 100, 1
            )
            for name in after
        }
        busy, stolen, total = (b - a for a, b in zip(machine_before, machine_after, strict=True))
        row["cpu_busy_pct"] = round(busy / total * 100, 1) if total else 0.0
        row["cpu_steal_pct"] = round(stolen / total * 100, 1) if total else 0.0
        return row


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
