"""The infra agent's GPU-cloud endpoints (``infra.gpu.*``): types, launch, list, terminate.

Prices are US dollars per hour, as the cloud quotes them now (re-read on every list). No
schema carries a secret: an instance's Jupyter token and URL are dropped at the adapter.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

#: an instance-type, region, SSH-key or file-system name as Lambda Cloud spells them
Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
InstanceId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
#: a name for a launched instance; the service picks a unique one when it is empty
LaunchName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_. -]{0,48}$")]


class GpuTypesRequest(msgspec.Struct, kw_only=True):
    """Which instance types to show; all of them by default."""

    available_only: bool = False  # only types with capacity in some region now
    region: Name | None = None  # only types with capacity in this region


class GpuType(msgspec.Struct, kw_only=True):
    name: str
    description: str
    price_usd_per_hour: float
    vcpus: int = 0
    memory_gib: int = 0
    storage_gib: int = 0
    regions: list[str] = msgspec.field(default_factory=list)  # with capacity now


class GpuTypes(msgspec.Struct, kw_only=True):
    types: list[GpuType]


class GpuLaunchRequest(msgspec.Struct, kw_only=True):
    """Launch ``quantity`` instances of one type; refused (402) when over a budget."""

    instance_type: Name
    region: Name
    ssh_key_names: Annotated[list[Name], msgspec.Meta(min_length=1, max_length=1)]
    quantity: Annotated[int, msgspec.Meta(ge=1, le=8)] = 1
    name: LaunchName = ""
    file_system_names: Annotated[list[Name], msgspec.Meta(max_length=1)] = msgspec.field(
        default_factory=list
    )


class GpuInstance(msgspec.Struct, kw_only=True):
    id: str
    status: str  # booting | active | unhealthy | terminating | terminated
    instance_type: str
    region: str = ""
    name: str = ""
    ip: str = ""
    hostname: str = ""
    price_usd_per_hour: float = 0.0  # the type's current price (0 when no longer listed)


class GpuSpend(msgspec.Struct, kw_only=True):
    """Where spending stands against the budgets (None: that budget is not configured)."""

    hourly_usd: float  # running instances at current prices
    month_spent_usd: float  # accrued this calendar month (UTC), as far as this service saw
    month_projected_usd: float  # spent plus running instances until the month ends
    hourly_budget_usd: float | None
    monthly_budget_usd: float | None


class GpuLaunched(msgspec.Struct, kw_only=True):
    instances: list[GpuInstance]  # may be fewer than asked: Lambda launches what it can
    name: str  # the name the instances carry (how a retried launch is recognised)
    spend: GpuSpend


class GpuListRequest(msgspec.Struct, kw_only=True):
    """List the account's instances, each re-priced from the current instance types."""


class GpuInstances(msgspec.Struct, kw_only=True):
    instances: list[GpuInstance]
    spend: GpuSpend


class GpuTerminateRequest(msgspec.Struct, kw_only=True):
    instance_ids: Annotated[list[InstanceId], msgspec.Meta(min_length=1, max_length=64)]


class GpuTerminated(msgspec.Struct, kw_only=True):
    instances: list[GpuInstance]  # may be fewer than asked, as Lambda answers
    spend: GpuSpend
