"""Lambda Cloud (Lambda Labs) over its public REST API v1: instance types, launch, list, terminate.

The shapes follow Lambda's published OpenAPI document (``https://cloud.lambdalabs.com/api/v1``;
as generated into github.com/dworznik/lambda-cloud-client): answers wrap their payload in
``data``, errors in ``{"error": {"code", "message", "suggestion"}, "field_errors"}``, prices
are integer US cents per hour. Lambda's docs (github.com/LambdaLabs/docsy-lambda-docs,
``cloud/rate-limiting.md``) limit requests to about one a second and launches to one per ten
seconds, enforced in front of the API (a 429, body ``error code: 1015``): the default
:class:`~adapters.integration.Policy` here takes a token for both.

The key is sent as a bearer token (Lambda accepts it as HTTP basic user name too) and never
appears in an error, a log line or a repr. Jupyter tokens in instance answers are dropped.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from adapters.integration import DEFAULT_LIMIT, Integration, Policy, Rate
from bus.errors import ConfigError, NotFoundError, SophiaError, UnavailableError

DEFAULT_BASE_URL = "https://cloud.lambdalabs.com/api/v1"
KEY_VARIABLE = "SOPHIA_LAMBDA_API_KEY"
LAUNCH_LIMIT = "launch"

#: Lambda's error codes that mean something other than their HTTP status says
_CAPACITY = "instance-operations/launch/insufficient-capacity"
_MISSING = "global/object-does-not-exist"


def default_policy(
    rate_per_s: float = 1.0, launch_interval_s: float = 10.0, **bounds: Any
) -> Policy:
    """Lambda's documented request limits as token buckets, with the other bounds given."""
    limits = {DEFAULT_LIMIT: Rate(rate_per_s)}
    if launch_interval_s > 0:
        limits[LAUNCH_LIMIT] = Rate(1.0 / launch_interval_s)
    return Policy(limits=limits, **bounds)


class Region(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""


class Specs(msgspec.Struct, kw_only=True):
    vcpus: int = 0
    memory_gib: int = 0
    storage_gib: int = 0


class InstanceType(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    price_cents_per_hour: int
    specs: Specs = msgspec.field(default_factory=Specs)


class TypeOffer(msgspec.Struct, kw_only=True):
    """One entry of ``GET /instance-types``: the type and where it has capacity now."""

    instance_type: InstanceType
    regions_with_capacity_available: list[Region] = msgspec.field(default_factory=list)


class TypeRef(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    price_cents_per_hour: int | None = None


class Instance(msgspec.Struct, kw_only=True):
    """An instance as Lambda reports it, without its Jupyter token and URL."""

    id: str
    status: str
    name: str | None = None
    ip: str | None = None
    hostname: str | None = None
    region: Region | None = None
    instance_type: TypeRef | None = None
    ssh_key_names: list[str] = msgspec.field(default_factory=list)


class _Types(msgspec.Struct):
    data: dict[str, TypeOffer]


class _Instances(msgspec.Struct):
    data: list[Instance]


class _One(msgspec.Struct):
    data: Instance


class _Launched(msgspec.Struct):
    class Data(msgspec.Struct):
        instance_ids: list[str]

    data: Data


class _Terminated(msgspec.Struct):
    class Data(msgspec.Struct):
        terminated_instances: list[Instance]

    data: Data


class _ErrorBody(msgspec.Struct):
    class Error(msgspec.Struct):
        code: str = ""
        message: str = ""
        suggestion: str = ""

    error: Error


class LambdaCloud(Integration):
    """The Lambda Cloud API v1; every method raises the SophiaErrors of ``Integration.call``."""

    service = "Lambda Cloud"
    key_variable = KEY_VARIABLE

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        policy: Policy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not api_key.strip():
            raise ConfigError(f"{KEY_VARIABLE}: must be set to a Lambda Cloud API key")
        super().__init__(
            base_url,
            headers={"Authorization": f"Bearer {api_key.strip()}", "Accept": "application/json"},
            policy=policy or default_policy(),
            transport=transport,
        )

    async def check_credentials(self) -> None:
        await self.instance_types()

    async def instance_types(self) -> dict[str, TypeOffer]:
        """Every instance type with its current price and the regions with capacity."""
        answer = await self.call("GET", "/instance-types", idempotent=True)
        return self._shape(answer, _Types).data

    async def instances(self) -> list[Instance]:
        answer = await self.call("GET", "/instances", idempotent=True)
        return self._shape(answer, _Instances).data

    async def instance(self, instance_id: str) -> Instance:
        answer = await self.call("GET", f"/instances/{instance_id}", idempotent=True)
        return self._shape(answer, _One).data

    async def launch(
        self,
        *,
        instance_type: str,
        region: str,
        ssh_key_names: list[str],
        name: str,
        quantity: int = 1,
        file_system_names: list[str] | None = None,
    ) -> list[str]:
        """Launch and return the new ids (maybe fewer than ``quantity``). Never retried once
        sent: an ambiguous failure raises OutcomeUnknownError (look for ``name``)."""
        body: dict[str, Any] = {
            "region_name": region,
            "instance_type_name": instance_type,
            "ssh_key_names": ssh_key_names,
            "quantity": quantity,
            "name": name,
        }
        if file_system_names:
            body["file_system_names"] = file_system_names
        answer = await self.call(
            "POST",
            "/instance-operations/launch",
            json=body,
            idempotent=False,
            limits=(DEFAULT_LIMIT, LAUNCH_LIMIT),
        )
        return self._shape(answer, _Launched).data.instance_ids

    async def terminate(self, instance_ids: list[str]) -> list[Instance]:
        """Terminate; safe to send again (a repeat ends nothing new)."""
        answer = await self.call(
            "POST",
            "/instance-operations/terminate",
            json={"instance_ids": instance_ids},
            idempotent=True,
        )
        return self._shape(answer, _Terminated).data.terminated_instances

    # ---- Lambda's error envelope -------------------------------------------------------------

    def upstream_error(self, response: httpx.Response) -> tuple[str, str]:
        try:
            body = msgspec.json.decode(response.content, type=_ErrorBody)
        except msgspec.DecodeError:  # e.g. the rate limiter's plain-text page
            return "", response.reason_phrase
        error = body.error
        message = error.message.rstrip(".")
        if error.suggestion:
            message = f"{message}. {error.suggestion}"
        return error.code, message

    def error_for(self, status: int, code: str, text: str) -> SophiaError | None:
        if code == _CAPACITY:
            return UnavailableError(text)  # no capacity now: not the caller's fault
        if code == _MISSING:
            return NotFoundError(text)
        return None

    def _shape(self, answer: Any, cls: type[Any]) -> Any:
        try:
            return msgspec.convert(answer, cls)
        except msgspec.ValidationError as exc:
            self.breaker.failed()
            what = f"{self.service} answered in an unexpected shape: {exc}"
            raise UnavailableError(what) from None
