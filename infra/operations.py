"""Running one Pulumi operation on one stack: audit events, engine progress, masked results.

:meth:`Operations.run` opens the stack, learns its secret config values (so they can be
masked anywhere they turn up), applies config changes (``scale``), runs the Automation API
call in a worker thread and turns its engine events into progress lines as they come. Each
operation is two audit events on ``<prefix>.events.infra.<stack>``: ``started`` and
``succeeded``/``failed`` (with the change counts), ``Nats-Msg-Id`` ``<op_id>-<phase>``.

A failure of the CLI is a ``failed`` result, not an exception: its text is the engine's error
diagnostics, masked, never the CLI's raw output (which may echo config). Cancelled (the agent
stops) the worker thread is abandoned — the CLI finishes or fails on its own, Pulumi's backend
lock guarding the state — and ``failed`` is recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from pulumi import automation as auto

from bus.client import Bus
from bus.schemas import infra as s
from infra.events import EventDigest, Redactor
from infra.workspace import Program, Workspaces

log = logging.getLogger("sophia.infra")


@dataclass(frozen=True)
class Job:
    """One operation asked for: what, where, and the config it sets first."""

    op_id: str
    program: Program
    env: str
    operation: str  # preview | up | refresh | destroy | scale
    config: dict[str, str] = field(default_factory=dict)  # path-style keys, plaintext
    detail: dict[str, str] = field(default_factory=dict)


#: where each progress line goes (an inbox publisher); it must not block
ProgressSink = Callable[[str, int], None]


def secret_values(config: dict[str, auto.ConfigValue]) -> list[str]:
    return [v.value for v in config.values() if v.secret]


class Operations:
    """Runs jobs against the stacks of :class:`Workspaces`, recording each in the audit trail."""

    def __init__(self, bus: Bus, workspaces: Workspaces) -> None:
        self.bus = bus
        self.workspaces = workspaces

    async def run(self, job: Job, progress: ProgressSink | None = None) -> s.OperationResult:
        """Run ``job`` to its end. Raises UnavailableError (CLI missing, events not stored)."""
        await self._audit(job, "started")
        digest = EventDigest(Redactor())
        result = s.OperationResult(
            op_id=job.op_id,
            stack=job.program.name,
            env=job.env,
            operation=job.operation,
            state="failed",
            message="the operation did not finish",
        )
        try:
            result = await self._execute(job, digest, progress)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                phase = "succeeded" if result.state == "succeeded" else "failed"
                await self._audit(job, phase, result.changes, result.message)
        return result

    async def _execute(
        self, job: Job, digest: EventDigest, progress: ProgressSink | None
    ) -> s.OperationResult:
        token = anyio.lowlevel.current_token()

        def on_event(event: auto.EngineEvent) -> None:
            line = digest.take(event)
            if line is not None and progress is not None:
                try:
                    anyio.from_thread.run_sync(progress, line, digest.steps, token=token)
                except anyio.RunFinishedError:
                    pass

        state, message = "failed", ""
        try:
            message = await anyio.to_thread.run_sync(
                self._blocking, job, digest, on_event, abandon_on_cancel=True
            )
            state = "succeeded"
        except auto.ConcurrentUpdateError:
            message = "the stack is locked by another Pulumi update"
        except auto.CommandError:
            message = digest.failure() or f"pulumi {job.operation} failed"
        log.info(
            "infra_operation_finished",
            extra={"op_id": job.op_id, "stack": job.program.name, "state": state},
        )
        return s.OperationResult(
            op_id=job.op_id,
            stack=job.program.name,
            env=job.env,
            operation=job.operation,
            state=state,  # type: ignore[arg-type]
            changes=digest.changes,
            steps=digest.steps,
            message=message,
        )

    def _blocking(
        self, job: Job, digest: EventDigest, on_event: Callable[[auto.EngineEvent], None]
    ) -> str:
        """The Automation API calls of one job (a worker thread); returns a summary line."""
        stack = self.workspaces.open(job.program, job.env)
        digest.redact.add(secret_values(stack.get_all_config()))
        for key, value in job.config.items():
            stack.set_config(key, auto.ConfigValue(value=value), path=True)
        match job.operation:
            case "preview":
                stack.preview(on_event=on_event, color="never")
            case "up" | "scale":
                up = stack.up(on_event=on_event, color="never", show_secrets=False)
                digest.redact.add(v.value for v in up.outputs.values() if v.secret)
            case "refresh":
                stack.refresh(on_event=on_event, color="never", show_secrets=False)
            case "destroy":
                stack.destroy(on_event=on_event, color="never", show_secrets=False)
        changes = ", ".join(f"{k} {v}" for k, v in sorted(digest.changes.items()))
        return f"{job.operation} done" + (f": {changes}" if changes else "")

    async def outputs(self, program: Program, env: str) -> s.Outputs:
        """The stack's outputs, secret ones masked. Raises UnavailableError (CLI missing)."""

        def read() -> dict[str, s.OutputValue]:
            stack = self.workspaces.open(program, env)
            redact = Redactor(secret_values(stack.get_all_config()))
            return {key: _shown(out, redact) for key, out in stack.outputs().items()}

        found = await anyio.to_thread.run_sync(read, abandon_on_cancel=True)
        return s.Outputs(stack=program.name, env=env, outputs=found)

    async def _audit(
        self, job: Job, phase: str, changes: dict[str, int] | None = None, message: str = ""
    ) -> None:
        event = s.InfraEvent(
            op_id=job.op_id,
            stack=job.program.name,
            env=job.env,
            operation=job.operation,
            phase=phase,  # type: ignore[arg-type]
            at=time.time(),
            changes=changes or {},
            message=message,
            detail=job.detail,
        )
        await self.bus.emit(event, "infra", job.program.name, msg_id=f"{job.op_id}-{phase}")


def _shown(out: auto.OutputValue, redact: Redactor) -> s.OutputValue:
    if out.secret:
        return s.OutputValue(value=s.SECRET_MASK, secret=True)
    value: Any = redact(out.value) if isinstance(out.value, str) else out.value
    return s.OutputValue(value=value)
