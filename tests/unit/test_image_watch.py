"""The image listing readiness reads: per region, at most every `every` seconds, the last
known kept when a listing fails, a region never listed absent (unknown)."""

from __future__ import annotations

from drwatch.errors import ProviderError
from drwatch.observe.images import ImageWatch
from drwatch.providers.base import ImageInfo


class Source:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.failing: set[str] = set()

    async def images(self, region: str) -> list[ImageInfo]:
        self.calls.append(region)
        if region in self.failing:
            raise ProviderError("RequestLimitExceeded", code="RequestLimitExceeded")
        return [ImageInfo("ami-1", region, "drwatch-app", (("drwatch:role", "app_server"),))]


async def test_lists_each_region_at_most_every_interval_and_keeps_the_last_known() -> None:
    """The first poll lists every region; one within `every` lists nothing; a failing
    region keeps what it had; a region that never listed stays absent."""
    src = Source()
    src.failing = {"eu-west-1"}
    watch = ImageWatch(src, ["us-east-1", "eu-west-1"], timeout=1.0, every=60.0)
    found = await watch.poll(100.0)
    assert set(found) == {"us-east-1"}
    assert dict(found["us-east-1"][0].tags) == {"drwatch:role": "app_server"}
    await watch.poll(130.0)
    assert src.calls == ["us-east-1", "eu-west-1"]
    src.failing = {"us-east-1"}
    found = await watch.poll(161.0)
    assert set(found) == {"us-east-1", "eu-west-1"}
    assert found["us-east-1"][0].id == "ami-1"
