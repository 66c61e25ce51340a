"""Volume health from the provider: every volume's state (DescribeVolumes: `error` is a
failed volume) and, where the provider has it, its I/O status (DescribeVolumeStatus:
`impaired`, `warning`). Polled beside discovery; the trend rules judge it.

A region whose calls fail keeps its last known volumes (and logs the failure once);
a provider that does not implement volume statuses is asked for states only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from drwatch.errors import ProviderError
from drwatch.logs import get_logger
from drwatch.model.samples import VolumeState
from drwatch.providers.base import VolumeInfo


def _log() -> Any:
    return get_logger(component="volumes")


class VolumeSource(Protocol):
    async def volumes(self, region: str) -> list[VolumeInfo]: ...


@runtime_checkable
class VolumeStatusSource(Protocol):
    async def volume_statuses(self, region: str) -> dict[str, str]: ...


class VolumeWatch:
    def __init__(self, provider: VolumeSource, regions: Sequence[str], timeout: float) -> None:
        self.provider = provider
        self.regions = tuple(regions)
        self.timeout = timeout
        self._by_region: dict[str, tuple[VolumeState, ...]] = {}
        self._errors: dict[str, str] = {}
        self._statuses = isinstance(provider, VolumeStatusSource)

    def current(self) -> tuple[VolumeState, ...]:
        return tuple(v for region in self.regions for v in self._by_region.get(region, ()))

    async def poll(self) -> tuple[VolumeState, ...]:
        for region in self.regions:
            try:
                async with asyncio.timeout(self.timeout):
                    self._by_region[region] = await self._region(region)
                self._note(region, None)
            except (ProviderError, TimeoutError) as err:
                self._note(region, str(err) or "timeout")
        return self.current()

    async def _region(self, region: str) -> tuple[VolumeState, ...]:
        volumes = await self.provider.volumes(region)
        statuses = await self._status(region)
        return tuple(
            VolumeState(v.id, region, v.state, v.attached_to, statuses.get(v.id, ""))
            for v in volumes
        )

    async def _status(self, region: str) -> dict[str, str]:
        if not self._statuses:
            return {}
        assert isinstance(self.provider, VolumeStatusSource)
        try:
            return await self.provider.volume_statuses(region)
        except ProviderError as err:
            # Not every provider (nor moto) implements it: states only, said once.
            _log().info("volumes.status_unavailable", region=region, reason=str(err)[:200])
            self._statuses = False
            return {}

    def _note(self, region: str, reason: str | None) -> None:
        if reason == self._errors.get(region):
            return
        if reason is None:
            self._errors.pop(region, None)
            _log().info("volumes.region_recovered", region=region)
        else:
            self._errors[region] = reason
            _log().warning("volumes.region_failed", region=region, reason=reason[:200])
