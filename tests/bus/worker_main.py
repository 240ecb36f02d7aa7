"""A worker process for the drain test: records each finished job id to $DONE_FILE."""

from __future__ import annotations

import os

import anyio

from bus import Agent, work
from bus.runner import run_agent
from tests.bus.agents import Job


class RecordingWorker(Agent, name="worker"):
    """Sleeps for each job, then appends its id to the file named by DONE_FILE."""

    @work
    async def handle(self, job: Job) -> None:
        await anyio.sleep(job.sleep_s)
        async with await anyio.open_file(os.environ["DONE_FILE"], "a") as fh:
            await fh.write(job.id + "\n")


if __name__ == "__main__":
    run_agent(RecordingWorker)
