"""``infra.gpu.*``: the GPU-cloud endpoints, as a mixin for the infra agent.

``bus.handlers.collect`` walks the class's MRO, so an agent declared as
``class InfraAgent(GpuEndpoints, Agent, name="infra")`` serves ``<prefix>.infra.gpu.types``,
``gpu.launch``, ``gpu.list`` and ``gpu.terminate``. The agent loads :class:`GpuSettings` in
its ``__init__`` (a bad value stops it before it connects), calls :meth:`open_gpu` in
``setup`` and :meth:`close_gpu` in ``teardown``.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from bus.config import Settings
from bus.errors import UnavailableError
from bus.handlers import endpoint
from bus.schemas.gpu import (
    GpuInstances,
    GpuLaunched,
    GpuLaunchRequest,
    GpuListRequest,
    GpuTerminated,
    GpuTerminateRequest,
    GpuTypes,
    GpuTypesRequest,
)
from infra.gpu import GpuService, GpuSettings


class GpuEndpoints:
    """The four GPU endpoints over ``self.gpu``; see the module docstring."""

    settings: Settings  # the agent's, for SOPHIA_HOME (where the spend ledger lives)
    gpu: GpuService | None = None

    async def open_gpu(
        self,
        gpu_settings: GpuSettings,
        *,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Open the GPU service; raises ConfigError when Lambda refuses the key."""
        self.gpu = await GpuService.open(
            gpu_settings, self.settings.home_path, env=env, transport=transport
        )

    async def close_gpu(self) -> None:
        if self.gpu is not None:
            await self.gpu.aclose()
            self.gpu = None

    def _gpu(self) -> GpuService:
        if self.gpu is None:
            raise UnavailableError("the GPU service is not open")
        return self.gpu

    @endpoint(subject="gpu.types", public=True, access="read")
    async def gpu_types(self, req: GpuTypesRequest) -> GpuTypes:
        """List Lambda Cloud instance types with their current USD/hour price and the regions
        with capacity now."""
        return await self._gpu().types(req)

    @endpoint(subject="gpu.list", public=True, access="read")
    async def gpu_list(self, req: GpuListRequest) -> GpuInstances:
        """List the account's GPU instances, each re-priced now, and spend against budgets."""
        return await self._gpu().list(req)

    @endpoint(subject="gpu.launch", public=True)
    async def gpu_launch(self, req: GpuLaunchRequest) -> GpuLaunched:
        """Launch GPU instances; refused with 402 when the hourly or monthly budget would be
        exceeded (the error names both figures). Never sent twice."""
        return await self._gpu().launch(req)

    @endpoint(subject="gpu.terminate", public=True)
    async def gpu_terminate(self, req: GpuTerminateRequest) -> GpuTerminated:
        """Terminate GPU instances by id; their spend stops counting from now."""
        return await self._gpu().terminate(req)
