"""Machine images per region, from the provider (DescribeImages, own images only): what
the readiness rules read to say whether a standby region could launch every group.

Polled beside discovery, at most every `every` seconds: images change rarely, and a
listing per region per discovery round is load the provider does not need. A region
whose listing fails keeps its last known images (and logs the failure once); a region
never listed is absent, which the rules read as unknown, never as "no images".
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

from drwatch.errors import ProviderError
from drwatch.logs import get_logger
from drwatch.model.images import ImageRef
from drwatch.providers.base import ImageInfo


def _log() -> Any:
    return get_logger(component="images")


class ImageSource(Protocol):
    async def images(self, region: str) -> list[ImageInfo]: ...


class ImageWatch:
    def __init__(
        self, provider: ImageSource, regions: Sequence[str], timeout: float, every: float = 60.0
    ) -> None:
        self.provider = provider
        self.every = every
        self._polled_at: float | None = None
        self.regions = tuple(regions)
        self.timeout = timeout
        self._by_region: dict[str, tuple[ImageRef, ...]] = {}
        self._errors: dict[str, str] = {}

    def current(self) -> Mapping[str, tuple[ImageRef, ...]]:
        return MappingProxyType(dict(self._by_region))

    async def poll(self, now: float) -> Mapping[str, tuple[ImageRef, ...]]:
        """List every region's images, unless the last listing is under `every` old."""
        if self._polled_at is not None and now - self._polled_at < self.every:
            return self.current()
        self._polled_at = now
        for region in self.regions:
            try:
                async with asyncio.timeout(self.timeout):
                    found = await self.provider.images(region)
                self._by_region[region] = tuple(
                    ImageRef(i.id, MappingProxyType(dict(i.tags))) for i in found
                )
                self._note(region, None)
            except (ProviderError, TimeoutError) as err:
                self._note(region, str(err) or "timeout")
        return self.current()

    def _note(self, region: str, reason: str | None) -> None:
        if reason == self._errors.get(region):
            return
        if reason is None:
            self._errors.pop(region, None)
            _log().info("images.region_recovered", region=region)
        else:
            self._errors[region] = reason
            _log().warning("images.region_failed", region=region, reason=reason[:200])
