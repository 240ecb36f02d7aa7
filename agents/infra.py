"""The infra agent: previews and applies infrastructure changes through Pulumi's Automation API.

Run as ``python -m agents.infra``. It serves ``sophia.infra.stacks``, ``preview``, ``up``,
``refresh``, ``destroy``, ``outputs`` and ``scale`` over the Pulumi programs in
``infra/stacks/`` (:mod:`infra.workspace`). One operation per stack at a time, across every
replica (:mod:`infra.lock`, 409 otherwise); ``up``, ``destroy`` and ``scale`` on a protected
stack (``SOPHIA_INFRA_PROTECTED``) need ``confirm`` equal to the stack's name. An operation
answers within ``wait_s``; a longer one answers ``running`` and goes on, its outcome in the
audit trail and in ``stacks``. Without the ``pulumi`` CLI every operation answers 503 naming
what to install; ``stacks`` still answers.

It also serves ``sophia.infra.gpu.types|list|launch|terminate`` (:mod:`infra.gpu_endpoints`):
GPU machines on Lambda Cloud behind the cost guard of :mod:`infra.costguard`.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import nats.errors
import nats.js.errors

from bus import Agent, BadRequestError, endpoint, wire
from bus.codec import encode
from bus.config import Settings, load
from bus.errors import InternalError, OverLimitError, SophiaError
from bus.schemas import infra as s
from bus.schemas.edge import CallProgress
from bus.subjects import INBOX_PREFIX, is_inbox
from bus.tasks import TaskSet
from infra.config import InfraSettings, load_infra
from infra.gpu import GpuSettings
from infra.gpu_endpoints import GpuEndpoints
from infra.lock import Lease, StackLocks
from infra.operations import Job, Operations
from infra.workspace import Program, Workspaces

log = logging.getLogger("sophia.infra")

CONFIRMED = ("up", "destroy", "scale")
PROGRESS_BUFFER = 256


class InfraAgent(GpuEndpoints, Agent, name="infra"):
    """Previews and applies infrastructure changes through Pulumi's Automation API."""

    workspaces: Workspaces
    locks: StackLocks
    operations: Operations

    def __init__(
        self,
        settings: Settings | None = None,
        infra: InfraSettings | None = None,
        workspaces: Workspaces | None = None,
        gpu: GpuSettings | None = None,
    ) -> None:
        """Raises ConfigError naming the variable (infra or GPU settings), before connecting."""
        super().__init__(settings)
        self.infra = infra or load_infra()
        self.gpu_settings = gpu or load(GpuSettings)
        self.workspaces = workspaces or Workspaces(self.settings, self.infra)
        self._jobs = TaskSet(self.infra.infra_concurrency)

    async def setup(self) -> None:
        self.locks = await StackLocks.open(
            self.bus.js,
            self.settings.prefix,
            self.infra.infra_lock_ttl_s,
            replicas=self.settings.stream_replicas,
        )
        self.operations = Operations(self.bus, self.workspaces)
        await self.open_gpu(self.gpu_settings)

    async def teardown(self) -> None:
        await self._jobs.cancel_all()
        await self.close_gpu()

    async def health_details(self) -> dict[str, str]:
        return {"backend": self.workspaces.backend, "operations": str(len(self._jobs))}

    # ---- endpoints -------------------------------------------------------------------------

    @endpoint(public=True, access="read")
    async def stacks(self, req: s.StacksRequest) -> s.StackList:
        """The Pulumi programs under infra/stacks: protected or not, running now, last result."""
        found = [
            s.StackInfo(
                name=p.name,
                protected=p.protected,
                path=str(p.path),
                running=await self.locks.holder(p.name) is not None,
                last=await self._last(p.name),
            )
            for p in self.workspaces.programs()
        ]
        state = await anyio.to_thread.run_sync(self.workspaces.cli_state)
        return s.StackList(stacks=found, pulumi=state)

    @endpoint(public=True, access="read")
    async def preview(self, req: s.OperationRequest) -> s.OperationResult:
        """Show what ``up`` would change, step by step as progress. Changes nothing."""
        return await self._operate(req, "preview")

    @endpoint(public=True)
    async def up(self, req: s.OperationRequest) -> s.OperationResult:
        """Create or update the stack's resources (``confirm`` on a protected stack)."""
        return await self._operate(req, "up")

    @endpoint
    async def refresh(self, req: s.OperationRequest) -> s.OperationResult:
        """Read the resources' real state into the stack's state."""
        return await self._operate(req, "refresh")

    @endpoint(public=True)
    async def destroy(self, req: s.OperationRequest) -> s.OperationResult:
        """Delete every resource of the stack (``confirm`` on a protected stack)."""
        return await self._operate(req, "destroy")

    @endpoint(public=True)
    async def scale(self, req: s.ScaleRequest) -> s.OperationResult:
        """Set one agent's replicas (config ``replicas.<agent>``) and run ``up``."""
        detail = {"agent": req.agent, "replicas": str(req.replicas)}
        config = {f"replicas.{req.agent}": str(req.replicas)}
        return await self._operate(req, "scale", config, detail)

    @endpoint(public=True, access="read")
    async def outputs(self, req: s.OutputsRequest) -> s.Outputs:
        """The stack's outputs; secret ones read ``[secret]``."""
        program = self.workspaces.program(req.stack)
        await anyio.to_thread.run_sync(self.workspaces.command)
        return await self.operations.outputs(program, req.env or self.infra.infra_env)

    # ---- running operations ----------------------------------------------------------------

    async def _operate(
        self,
        req: s.OperationRequest | s.ScaleRequest,
        operation: str,
        config: dict[str, str] | None = None,
        detail: dict[str, str] | None = None,
    ) -> s.OperationResult:
        """Check, lock and start one job, then wait for it at most ``wait_s``.

        Raises BadRequestError (``confirm``, ``progress_subject``), NotFoundError (``stack``),
        UnavailableError (no CLI), ConflictError (the stack is busy), OverLimitError.
        """
        program = self.workspaces.program(req.stack)
        self._check(req, program, operation)
        await anyio.to_thread.run_sync(self.workspaces.command)
        if not self._jobs.has_room():
            raise OverLimitError(f"{self._jobs.limit} infra operations are running already")
        job = Job(
            op_id=uuid.uuid4().hex[:16],
            program=program,
            env=req.env or self.infra.infra_env,
            operation=operation,
            config=config or {},
            detail=detail or {},
        )
        outcome: dict[str, Any] = {}
        locked, finished = anyio.Event(), anyio.Event()
        self._jobs.start(self._job(job, req.progress_subject, outcome, locked, finished))
        await locked.wait()
        with anyio.move_on_after(req.wait_s):
            await finished.wait()
        if "error" in outcome:
            raise outcome["error"]
        if "result" in outcome:
            return outcome["result"]
        return s.OperationResult(
            op_id=job.op_id,
            stack=program.name,
            env=job.env,
            operation=operation,
            state="running",
            message="still running; see stacks or the audit trail",
        )

    async def _job(
        self,
        job: Job,
        progress_subject: str,
        outcome: dict[str, Any],
        locked: anyio.Event,
        finished: anyio.Event,
    ) -> None:
        lease = Lease(op_id=job.op_id, operation=job.operation, holder=self.id, since=0.0)
        try:
            async with self.locks.hold(job.program.name, lease):
                locked.set()
                outcome["result"] = await self._run_reporting(job, progress_subject)
        except SophiaError as exc:
            outcome["error"] = exc
        except Exception:
            log.exception("infra_operation_failed", extra={"op_id": job.op_id})
            outcome["error"] = InternalError()
        finally:
            locked.set()
            finished.set()

    def _check(
        self, req: s.OperationRequest | s.ScaleRequest, program: Program, operation: str
    ) -> None:
        if req.progress_subject and not is_inbox(req.progress_subject):
            raise BadRequestError(f"progress_subject: must be an inbox ({INBOX_PREFIX}…)")
        if program.protected and operation in CONFIRMED and req.confirm != program.name:
            raise BadRequestError(
                f"confirm: stack {program.name} is protected; send confirm equal to its name"
            )

    async def _run_reporting(self, job: Job, subject: str) -> s.OperationResult:
        """Run ``job``, publishing its progress lines to ``subject`` (when set) in order; every
        line is out before this returns, so a caller gets them before the reply."""
        if not subject:
            return await self.operations.run(job)
        send, receive = anyio.create_memory_object_stream[tuple[str, int]](PROGRESS_BUFFER)

        def sink(line: str, steps: int) -> None:
            try:
                send.send_nowait((line, steps))
            except anyio.WouldBlock:  # a slow inbox loses lines rather than stall the engine
                pass

        async def pump() -> None:
            async with receive:
                async for line, steps in receive:
                    report = CallProgress(progress=float(steps), message=line)
                    try:
                        await wire.publish(self.nc, subject, encode(report), what="progress")
                    except (nats.errors.Error, SophiaError):
                        pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            async with send:
                return await self.operations.run(job, sink)

    async def _last(self, stack: str) -> s.LastResult | None:
        """The stack's latest audit event, if it has one."""
        subject = self.bus.subjects.event("infra", stack)
        try:
            msg = await self.bus.js.get_last_msg(self.bus.subjects.events_stream, subject)
        except nats.js.errors.NotFoundError:
            return None
        if not msg.data:
            return None
        event = msgspec.json.decode(msg.data, type=s.InfraEvent)
        return s.LastResult(
            op_id=event.op_id,
            operation=event.operation,
            env=event.env,
            phase=event.phase,
            at=event.at,
            message=event.message,
        )


if __name__ == "__main__":
    from bus.runner import run_agent

    run_agent(InfraAgent)
