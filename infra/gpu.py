"""The GPU-cloud service the infra agent serves as ``infra.gpu.*``: Lambda Cloud behind the
cost guard.

Guarantees: every launch is checked by the cost guard against a fresh, re-priced list, one
launch at a time per process, so two launches cannot both fit into the same headroom; every
list re-prices the running instances from the current instance types; a launch whose outcome
is unknown (sent, then no answer) is never sent again — the service looks for the unique name
it gave the launch and reports those instances, or says the outcome is unknown.

Configuration (``SOPHIA_*``, validated at start): :class:`GpuSettings`; the key comes from
``SOPHIA_LAMBDA_API_KEY`` only, read once, never logged or shown. Without it every
``infra.gpu.*`` call answers 503 saying what to set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import anyio
import httpx
import msgspec

from adapters.integration import OutcomeUnknownError
from adapters.lambdalabs import DEFAULT_BASE_URL, KEY_VARIABLE, Instance, LambdaCloud
from adapters.lambdalabs import default_policy as lambda_policy
from bus.config import Seconds
from bus.errors import BadRequestError, SophiaError, UnavailableError
from bus.schemas.gpu import (
    GpuInstance,
    GpuInstances,
    GpuLaunched,
    GpuLaunchRequest,
    GpuListRequest,
    GpuTerminated,
    GpuTerminateRequest,
    GpuType,
    GpuTypes,
    GpuTypesRequest,
)
from infra.costguard import CostGuard, Ledger

Usd = Annotated[float, msgspec.Meta(gt=0, le=10_000_000)]
#: what Lambda reports for an instance that no longer costs anything
ENDED = frozenset({"terminated"})


class GpuSettings(msgspec.Struct, kw_only=True, frozen=True):
    """``SOPHIA_LAMBDA_*`` and ``SOPHIA_GPU_*``; load with ``bus.config.load(GpuSettings)``."""

    lambda_base_url: Annotated[
        str, msgspec.Meta(pattern=r"^https?://", description="must be an http(s):// URL")
    ] = DEFAULT_BASE_URL
    lambda_timeout_s: Seconds = 20.0  # one HTTP attempt
    lambda_deadline_s: Seconds = 60.0  # one call, retries and waits included
    lambda_max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3
    lambda_backoff_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5
    lambda_rate_per_s: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 1.0
    lambda_launch_interval_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    lambda_breaker_failures: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    lambda_breaker_cooldown_s: Seconds = 30.0
    gpu_budget_hourly_usd: Usd | None = None
    gpu_budget_monthly_usd: Usd | None = None
    gpu_ledger: str = ""  # the ledger file; default <SOPHIA_HOME>/gpu/ledger.json


def open_cloud(
    settings: GpuSettings,
    env: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> LambdaCloud | None:
    """The Lambda adapter for ``settings``, or None when no key is set."""
    key = (os.environ if env is None else env).get(KEY_VARIABLE, "")
    if not key.strip():
        return None
    policy = lambda_policy(
        settings.lambda_rate_per_s,
        settings.lambda_launch_interval_s,
        attempt_timeout_s=settings.lambda_timeout_s,
        deadline_s=settings.lambda_deadline_s,
        max_retries=settings.lambda_max_retries,
        backoff_base_s=settings.lambda_backoff_s,
        backoff_max_s=max(settings.lambda_backoff_s, 8.0),
        breaker_failures=settings.lambda_breaker_failures,
        breaker_cooldown_s=settings.lambda_breaker_cooldown_s,
    )
    return LambdaCloud(key, settings.lambda_base_url, policy=policy, transport=transport)


class GpuService:
    """Types, launch, list and terminate over one cloud adapter and one ledger."""

    def __init__(self, cloud: LambdaCloud | None, guard: CostGuard) -> None:
        self.cloud = cloud
        self.guard = guard
        self._launching = anyio.Lock()

    @classmethod
    async def open(
        cls,
        settings: GpuSettings,
        home: Path,
        *,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> GpuService:
        """Build the service and check the key once. Raises ConfigError when Lambda refuses it."""
        ledger = Ledger(
            Path(settings.gpu_ledger) if settings.gpu_ledger else home / "gpu" / "ledger.json"
        )
        guard = CostGuard(ledger, settings.gpu_budget_hourly_usd, settings.gpu_budget_monthly_usd)
        cloud = open_cloud(settings, env, transport)
        if cloud is not None:
            try:
                await cloud.start()
            except BaseException:
                await cloud.aclose()
                raise
        return cls(cloud, guard)

    async def aclose(self) -> None:
        if self.cloud is not None:
            await self.cloud.aclose()

    def _cloud(self) -> LambdaCloud:
        if self.cloud is None:
            raise UnavailableError(f"the GPU cloud is not configured: set {KEY_VARIABLE}")
        return self.cloud

    # ---- the four operations -----------------------------------------------------------------

    async def types(self, req: GpuTypesRequest) -> GpuTypes:
        offers = await self._cloud().instance_types()
        types = []
        for offer in offers.values():
            regions = [r.name for r in offer.regions_with_capacity_available]
            if (req.available_only or req.region) and not regions:
                continue
            if req.region and req.region not in regions:
                continue
            kind = offer.instance_type
            types.append(
                GpuType(
                    name=kind.name,
                    description=kind.description,
                    price_usd_per_hour=kind.price_cents_per_hour / 100,
                    vcpus=kind.specs.vcpus,
                    memory_gib=kind.specs.memory_gib,
                    storage_gib=kind.specs.storage_gib,
                    regions=regions,
                )
            )
        return GpuTypes(types=sorted(types, key=lambda t: (t.price_usd_per_hour, t.name)))

    async def list(self, req: GpuListRequest | None = None) -> GpuInstances:
        instances = await self._priced_instances()
        return GpuInstances(instances=instances, spend=self.guard.spend())

    async def launch(self, req: GpuLaunchRequest) -> GpuLaunched:
        cloud = self._cloud()
        name = f"{req.name.strip() or 'sophia'}-{uuid.uuid4().hex[:12]}"
        async with self._launching:
            prices = await self._prices()
            await self._priced_instances(prices)
            price = prices.get(req.instance_type)
            if price is None:
                raise BadRequestError(
                    f"instance_type: Lambda Cloud has no type {req.instance_type}"
                )
            self.guard.check(price * req.quantity)
            try:
                ids = await cloud.launch(
                    instance_type=req.instance_type,
                    region=req.region,
                    ssh_key_names=list(req.ssh_key_names),
                    name=name,
                    quantity=req.quantity,
                    file_system_names=list(req.file_system_names),
                )
            except OutcomeUnknownError:
                ids = await self._launched_as(name)
            self.guard.ledger.started(ids, req.instance_type, price)
        launched = [
            GpuInstance(
                id=i,
                status="booting",
                instance_type=req.instance_type,
                region=req.region,
                name=name,
                price_usd_per_hour=price,
            )
            for i in ids
        ]
        return GpuLaunched(instances=launched, name=name, spend=self.guard.spend())

    async def terminate(self, req: GpuTerminateRequest) -> GpuTerminated:
        ended = await self._cloud().terminate(list(req.instance_ids))
        self.guard.ledger.ended(i.id for i in ended)
        return GpuTerminated(instances=[_instance(i, {}) for i in ended], spend=self.guard.spend())

    # ---- pricing and reconciling -------------------------------------------------------------

    async def _prices(self) -> dict[str, float]:
        offers = await self._cloud().instance_types()
        return {name: o.instance_type.price_cents_per_hour / 100 for name, o in offers.items()}

    async def _priced_instances(self, prices: dict[str, float] | None = None) -> list[GpuInstance]:
        """Every instance at its type's current price; the ledger sees the running ones."""
        prices = await self._prices() if prices is None else prices
        instances = [_instance(i, prices) for i in await self._cloud().instances()]
        self.guard.ledger.observe(
            {
                i.id: (i.instance_type, i.price_usd_per_hour)
                for i in instances
                if i.status not in ENDED
            }
        )
        return instances

    async def _launched_as(self, name: str) -> list[str]:
        """The ids of instances named ``name`` (a launch whose answer was lost).
        Raises OutcomeUnknownError when none is there (yet)."""
        try:
            found = [i.id for i in await self._cloud().instances() if i.name == name]
        except SophiaError:
            found = []  # the list failed too: the outcome stays unknown
        if not found:
            raise OutcomeUnknownError(
                f"the launch of {name} got no answer and no instance carries that name yet; "
                "list instances before launching again"
            )
        return found


def _instance(instance: Instance, prices: Mapping[str, float]) -> GpuInstance:
    """Ours, priced from the current types; a type no longer listed keeps the price the
    instance itself reports (0 when it reports none)."""
    kind = instance.instance_type.name if instance.instance_type else ""
    own = instance.instance_type.price_cents_per_hour if instance.instance_type else None
    return GpuInstance(
        id=instance.id,
        status=instance.status,
        instance_type=kind,
        region=instance.region.name if instance.region else "",
        name=instance.name or "",
        ip=instance.ip or "",
        hostname=instance.hostname or "",
        price_usd_per_hour=prices.get(kind, (own or 0) / 100),
    )
