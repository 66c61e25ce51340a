"""Copies to another region (CopyImage, CopySnapshot) are made once across crashes, even
while describe lags behind what the provider made."""

from __future__ import annotations

from pathlib import Path

from drwatch.act.base import Deps, Outcome, Playbook, RunContext, Step, done
from drwatch.act.playbooks.common import copy_image_once, copy_snapshot_once
from drwatch.act.testing import (
    FAST_SETTINGS,
    TEST_GROUPS,
    SimulatedHosts,
    World,
    crash_at_every_point,
)
from drwatch.model.plan import Plan, PlaybookName
from drwatch.providers.fake import FakeProvider

US, EU = "us-east-1", "eu-west-1"


async def copy_both(ctx: RunContext) -> Outcome:
    """A step as the backup work will write it: the group's image and the newest snapshot
    copied to the standby region."""
    source = ctx.plan.targets
    image = await copy_image_once(
        ctx, "image", EU, source_region=US, image_id=source[0], name="app-image"
    )
    snap = await copy_snapshot_once(ctx, "snapshot", EU, source_region=US, snapshot_id=source[1])
    return done(f"copied {source[0]} as {image} and {source[1]} as {snap}")


# Any contract name serves: the registry handed to the runner holds only this playbook.
COPY = Playbook(PlaybookName.REGION_FAILOVER, (Step("copy", copy_both),))


def setup() -> tuple[World, Deps, Plan]:
    fake = FakeProvider([US, EU])
    image = fake.add_image(US, "app-image")
    snap = fake.add_snapshot(US, None)
    fake.lag_describes(8)
    hosts = SimulatedHosts(fake, groups=TEST_GROUPS)
    deps = Deps(fake, hosts, hosts, TEST_GROUPS, FAST_SETTINGS)
    world = World(fake, hosts, {}, "", "", [])
    plan = Plan("inc-copy", COPY.name, US, "us-east-1a", "app", (image.id, snap.id))
    return world, deps, plan


async def test_copies_survive_a_crash_at_every_point_with_describe_lag(tmp_path: Path) -> None:
    """Crash anywhere, resume with the copies missing from describe: one image copy (the
    retry is answered from its client token) and one snapshot copy (found by its tags
    within the describe lag)."""

    async def verify(world: World, point: str) -> None:
        fake = world.provider
        fake.reveal()  # describe catches up in the end
        images = fake.count("copy_image") - sum(1 for c in fake.replayed if c[0] == "copy_image")
        assert images == 1, point
        assert fake.count("copy_snapshot") == 1, point
        assert len(await fake.snapshots(EU)) == 1, point
        assert len(await fake.images(EU)) == 1, point

    points = await crash_at_every_point(tmp_path, setup, verify, playbooks={COPY.name: COPY})
    assert "copy/snapshot:applied" in points
    assert "copy/image:applied" in points
