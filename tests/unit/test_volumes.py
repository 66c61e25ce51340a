"""Volume health from the provider: observed per region, judged into volume_impaired."""

from __future__ import annotations

from dataclasses import replace

from drwatch.assess.trends import assess_trends, assess_volumes
from drwatch.config import TrendsConfig
from drwatch.errors import ProviderError
from drwatch.model.findings import Finding, Severity
from drwatch.model.fleet import Instance, Role
from drwatch.model.samples import VolumeState
from drwatch.observe.volumes import VolumeWatch
from drwatch.providers.base import VolumeInfo
from drwatch.providers.fake import FakeProvider

REGION = "us-east-1"
DB = Instance("i-1", "db-1", REGION, "us-east-1a", Role.DATABASE, "db")


def test_a_failed_or_impaired_volume_of_a_watched_instance_is_a_warning() -> None:
    volumes = [
        VolumeState("vol-ok", REGION, "in-use", "i-1", "ok"),
        VolumeState("vol-err", REGION, "error", "i-1"),
        VolumeState("vol-io", REGION, "in-use", "i-1", "impaired"),
        VolumeState("vol-other", REGION, "error", "i-99"),  # not a watched instance
        VolumeState("vol-loose", REGION, "error", None),  # attached to nothing
    ]
    found = assess_volumes([DB], volumes, now=0.0)
    assert [dict(d.facts)["volume"] for d in found] == ["vol-err", "vol-io"]
    assert all(d.finding is Finding.VOLUME_IMPAIRED for d in found)
    assert all(d.severity is Severity.WARNING for d in found)
    assert found[0].evidence == "db-1: volume vol-err: provider says state error"
    assert found[1].evidence == "db-1: volume vol-io: provider says state in-use, status impaired"
    report = assess_trends([DB], {}, 0.0, TrendsConfig(), volumes=volumes)
    assert [d.finding for d in report.diagnoses] == [Finding.VOLUME_IMPAIRED] * 2


class StatusFake(FakeProvider):
    """The fake with DescribeVolumeStatus: one volume impaired, or the call failing."""

    def __init__(self, impaired: str = "", fail: bool = False) -> None:
        super().__init__()
        self.impaired, self.fail = impaired, fail
        self.status_calls = 0

    async def volume_statuses(self, region: str) -> dict[str, str]:
        self.status_calls += 1
        if self.fail:
            raise ProviderError("DescribeVolumeStatus is not implemented", code="InternalError")
        return {self.impaired: "impaired"} if self.impaired else {}


async def test_the_watch_reads_states_and_statuses() -> None:
    fake = StatusFake()
    inst = fake.add_instance(REGION, "us-east-1a", name="db-1")
    vol = fake.add_volume(REGION, "us-east-1a", attached_to=inst.id)
    fake.impaired = vol.id
    watch = VolumeWatch(fake, [REGION], timeout=5.0)
    (seen,) = await watch.poll()
    assert (seen.id, seen.attached_to, seen.status) == (vol.id, inst.id, "impaired")


async def test_a_provider_without_statuses_is_asked_for_states_only() -> None:
    """moto (and some providers) do not implement DescribeVolumeStatus: states only,
    and the call is not repeated every poll."""
    fake = StatusFake(fail=True)
    inst = fake.add_instance(REGION, "us-east-1a", name="db-1")
    vol = fake.add_volume(REGION, "us-east-1a", attached_to=inst.id)
    region = fake._region(REGION)
    region.volumes[vol.id] = replace(region.volumes[vol.id], state="error")
    watch = VolumeWatch(fake, [REGION], timeout=5.0)
    (seen,) = await watch.poll()
    await watch.poll()
    assert (seen.state, seen.status) == ("error", "")
    assert fake.status_calls == 1


class Flaky(FakeProvider):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def volumes(self, region: str) -> list[VolumeInfo]:
        if self.down:
            raise ProviderError("region unreachable")
        return await super().volumes(region)


async def test_a_failing_region_keeps_its_last_known_volumes() -> None:
    fake = Flaky()
    inst = fake.add_instance(REGION, "us-east-1a", name="db-1")
    fake.add_volume(REGION, "us-east-1a", attached_to=inst.id)
    watch = VolumeWatch(fake, [REGION], timeout=5.0)
    first = await watch.poll()
    fake.down = True
    assert await watch.poll() == first
