"""The ``llm`` agent: the model gateway's service, shared by every caller on the bus.

Run as ``python -m bus.runner agents.llm`` (``sophia up`` starts it). It serves
:class:`adapters.llm.gateway.Gateway` on ``sophia.llm.complete``, ``sophia.llm.models`` and
``sophia.llm.costs``, so budgets, circuit breakers and caches are the same for every agent
and visible with ``nats micro stats llm``. With no model configured it still starts, and
``complete`` answers 503 naming the variables to set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import msgspec

from adapters.llm.config import load_llm
from bus import Agent, BadRequestError, endpoint, wire
from bus.codec import encode
from bus.config import Settings, load
from bus.schemas import llm as s
from bus.schemas.common import Empty
from bus.subjects import INBOX_PREFIX, is_inbox
from bus.tasks import TaskSet
from memory.config import MemorySettings

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from adapters.llm.gateway import Gateway
    from adapters.llm.ledger import CallLedger
    from adapters.llm.transport import Transports

#: accounting and cache writes waiting to run after their replies; a call waits for room
AFTERWARDS = 256
AFTERWARDS_GRACE_S = 10.0


class LlmAgent(Agent, name="llm"):
    """One call for every model: routing, fallbacks, budgets, caches, accounting."""

    gateway: Gateway
    ledger: CallLedger
    transports: Transports

    def __init__(self, settings: Settings | None = None) -> None:
        """Load the gateway's configuration too. Raises ConfigError naming the setting."""
        super().__init__(settings)
        self.config = load_llm()
        self.memory_settings = msgspec.structs.replace(
            load(MemorySettings), home=self.settings.home
        )
        self._afterwards = TaskSet(AFTERWARDS)

    async def setup(self) -> None:
        from adapters.llm.accounting import Accounting
        from adapters.llm.budget import Budgets, Limits
        from adapters.llm.cache import CallCache, ExactLru
        from adapters.llm.gateway import Gateway
        from adapters.llm.ledger import open_ledger
        from adapters.llm.transport import Transports

        table = self.config.table
        budgets = self.config.budgets
        limits = Limits(budgets.per_task_usd, budgets.per_project_usd, budgets.per_day_usd)
        self.ledger = open_ledger(self.memory_settings)
        await self.ledger.open()
        self.transports = Transports(self.config.transport)
        cache = CallCache(
            self.bus,
            lru=ExactLru(table.exact_cache_items, table.cache_ttl_s),
            lookup_timeout_s=table.cache_lookup_timeout_s,
            ttl_s=table.cache_ttl_s,
        )
        self.gateway = Gateway(
            self.config,
            transports=self.transports,
            budgets=await Budgets.open(self.bus, limits),
            cache=cache,
            accounting=Accounting(self.bus, self.ledger),
            later=self._later,
        )

    async def teardown(self) -> None:
        with anyio.move_on_after(AFTERWARDS_GRACE_S, shield=True):
            await self._afterwards.wait_idle()
        await self._afterwards.cancel_all()
        await self.transports.aclose()
        await self.ledger.close()

    async def settled(self) -> None:
        """Return once the writes that follow replies (events, ledger rows, cache entries,
        budget settlements) are done."""
        await self._afterwards.wait_idle()

    def _later(self, work: Awaitable[None]) -> None:
        """Run ``work`` after the reply; when too much is waiting, it is dropped and closed
        (an event or a cache entry lost, never a reply held up)."""
        if self._afterwards.has_room():
            self._afterwards.start(work)  # type: ignore[arg-type]
        else:
            work.close()  # type: ignore[attr-defined]

    async def health_details(self) -> dict[str, str]:
        return {
            "transport": self.config.transport.kind,
            "models": str(len(self.config.models)),
            "configured": str(self.config.configured).lower(),
        }

    @endpoint(public=True)
    async def complete(self, req: s.CompleteRequest) -> s.CompleteResult:
        """Call a model: routed by task and strategy, budgeted, retried, cached where safe.

        With ``stream_subject`` (an inbox) the text is published there as it arrives.
        Raises BadRequestError, BudgetExceededError (402), UnavailableError (503).
        """
        subject = req.stream_subject
        if subject and not is_inbox(subject):
            raise BadRequestError(f"stream_subject: must be an inbox ({INBOX_PREFIX}…)")
        if not subject:
            return await self.gateway.complete(req)

        async def publish(delta: s.Delta) -> None:
            await wire.publish(self.nc, subject, encode(delta), what="stream")

        return await self.gateway.complete(req, on_delta=publish)

    @endpoint(public=True, access="read")
    async def models(self, req: Empty) -> s.ModelsResult:
        """The configured models with their live circuit state, the routes and budgets."""
        gateway = self.gateway
        models = [
            s.ModelInfo(
                name=m.name,
                provider=m.provider,
                upstream_model=m.upstream_model,
                context_window=m.context_window,
                input_usd_per_mtok=m.input_usd_per_mtok,
                output_usd_per_mtok=m.output_usd_per_mtok,
                quality=m.quality,
                capabilities=sorted(m.capabilities),
                concurrency=m.concurrency,
                circuit=gateway.attempts.breakers[m.breaker_key].state,
                in_flight=gateway.attempts.in_flight(m.name),
            )
            for m in self.config.models
        ]
        budgets = self.config.budgets
        return s.ModelsResult(
            models=models,
            routes={task: list(chain) for task, chain in self.config.routes.items()},
            budgets=s.BudgetInfo(
                per_task_usd=budgets.per_task_usd,
                per_project_usd=budgets.per_project_usd,
                per_day_usd=budgets.per_day_usd,
            ),
            transport=self.config.transport.kind,
            configured=self.config.configured,
        )

    @endpoint(public=True, access="read")
    async def costs(self, req: s.CostsRequest) -> s.CostsResult:
        """Calls, tokens and USD since ``since``, summed by model, task, project or day."""
        totals = await self.ledger.totals(req.by, req.since)
        rows = [
            s.CostTotal(
                key=t.key,
                calls=t.calls,
                input_tokens=t.input_tokens,
                output_tokens=t.output_tokens,
                cost_usd=round(t.cost_usd, 9),
                cached_calls=t.cached_calls,
            )
            for t in totals
        ]
        return s.CostsResult(
            by=req.by,
            since=req.since,
            totals=rows,
            calls=sum(r.calls for r in rows),
            cost_usd=round(sum(r.cost_usd for r in rows), 9),
        )


if __name__ == "__main__":
    from bus.runner import run_agent

    run_agent(LlmAgent)
