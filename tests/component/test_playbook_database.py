"""database.recover against the in-memory provider: every rung of the ladder, and crashes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from drwatch.act.base import JSON, RUN_TAG, Deps
from drwatch.act.testing import (
    REGION,
    SimulatedHosts,
    World,
    crash_at_every_point,
    new_world,
    run_plan,
)
from drwatch.incidents import IncidentStore
from drwatch.model.fleet import Instance, InstanceState
from drwatch.model.plan import Plan, PlaybookName, RunOutcome, RunProgress, StepStatus
from drwatch.roles import RoleMemory


def db_plan(world: World) -> Plan:
    return Plan(
        incident_id="inc-db",
        playbook=PlaybookName.DB_RECOVER,
        region=REGION,
        zone="us-east-1a",
        group="db",
        targets=(world.id("db-1"),),
    )


def statuses(progress: RunProgress) -> dict[str, tuple[StepStatus, str]]:
    return {s.name: (s.status, s.detail) for s in progress.steps}


async def recover(tmp_path: Path, world: World, deps: Deps) -> RunProgress:
    progress = await run_plan(tmp_path / "j.db", deps, db_plan(world), owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
    return progress


def db1_stopped() -> tuple[World, Deps, Plan]:
    world, deps = new_world()
    world.provider.set_state(world.id("db-1"), InstanceState.STOPPED)
    return world, deps, db_plan(world)


def launches_fail_in_1a() -> tuple[World, Deps, Plan]:
    world, deps, plan = db1_stopped()
    world.provider.fail_launches_in("us-east-1a")
    return world, deps, plan


def volume_corrupt_db1_hung() -> tuple[World, Deps, Plan]:
    """db-1 runs but answers nothing (so fencing it is a real stop), its volume corrupt."""
    world, deps = new_world()
    world.hosts.down.add(world.id("db-1"))
    world.hosts.corrupt.add(world.data_volume)
    return world, deps, db_plan(world)


def newest_snapshot_corrupt_replica_down() -> tuple[World, Deps, Plan]:
    world, deps, plan = db1_stopped()
    world.hosts.corrupt |= {world.data_volume, world.snapshots[-1]}
    world.hosts.down.add(world.id("db-2"))
    return world, deps, plan


async def test_stopped_primary_is_relaunched_in_its_zone_with_its_volume(tmp_path: Path) -> None:
    """db-1 stopped: relaunch_same_zone mounts db-1-data on a new host in us-east-1a;
    the later rungs say they were not needed; the app servers are told the primary."""
    world, deps, _ = db1_stopped()
    progress = await recover(tmp_path, world, deps)
    steps = statuses(progress)
    assert steps["relaunch_same_zone"][0] is StepStatus.DONE
    for rung in ("restore_volume_elsewhere", "promote_replica", "restore_latest_snapshot"):
        assert steps[rung][0] is StepStatus.SKIPPED
        assert steps[rung][1].startswith("not needed: relaunch_same_zone")
    (new,) = await world.launched()
    assert new.zone == "us-east-1a"
    assert new.volumes == (world.data_volume,)
    assert new.tag("drwatch:db-role") == "primary"
    assert set(world.hosts.databases.values()) == {"db-1"}
    assert len(world.hosts.databases) == 6


async def test_launch_refused_in_the_old_zone_restores_the_volume_elsewhere(
    tmp_path: Path,
) -> None:
    """Launches fail in us-east-1a: relaunch_same_zone is skipped with the provider's reason,
    and a snapshot of the live volume becomes a new volume beside a host in another zone."""
    world, deps, _ = launches_fail_in_1a()
    progress = await recover(tmp_path, world, deps)
    steps = statuses(progress)
    assert steps["relaunch_same_zone"][0] is StepStatus.SKIPPED
    assert "InsufficientInstanceCapacity" in steps["relaunch_same_zone"][1]
    assert steps["restore_volume_elsewhere"][0] is StepStatus.DONE
    (new,) = await world.launched()
    assert new.zone != "us-east-1a"
    (vol,) = new.volumes
    volumes = {v.id: v for v in await world.provider.volumes(REGION)}
    assert volumes[vol].zone == new.zone
    assert world.provider.count("create_snapshot") == 1


class FencingWitness(SimulatedHosts):
    """Records, at each promote, whether the old primary was already stopped."""

    old_id: str = ""
    fenced_at_promote: list[bool]

    async def action(self, instance: Instance, name: str, params: Mapping[str, str]) -> JSON:
        if name == "promote":
            old = [i for i in await self.provider.instances(REGION) if i.id == self.old_id]
            self.fenced_at_promote.append(old[0].state is InstanceState.STOPPED)
        return await super().action(instance, name, params)


async def test_corrupt_volume_promotes_the_replica_after_fencing(tmp_path: Path) -> None:
    """db-1-data corrupt: relaunch finds it corrupt (and stops the host it made), the copy
    rung is skipped, db-2 is promoted only after db-1 was stopped, and apps point at db-2."""
    world, _, _ = volume_corrupt_db1_hung()
    hosts = FencingWitness(world.provider, groups=world.hosts.groups)
    hosts.__dict__.update(
        {k: v for k, v in world.hosts.__dict__.items() if k not in ("provider", "groups")}
    )
    hosts.old_id, hosts.fenced_at_promote = world.id("db-1"), []
    deps = Deps(world.provider, hosts, hosts, world.hosts.groups, new_world()[1].settings)
    progress = await recover(tmp_path, world, deps)
    steps = statuses(progress)
    assert steps["relaunch_same_zone"][0] is StepStatus.SKIPPED
    assert "corrupt" in steps["relaunch_same_zone"][1]
    assert steps["restore_volume_elsewhere"] == (
        StepStatus.SKIPPED,
        f"volume {world.data_volume} is corrupt",
    )
    assert steps["promote_replica"][0] is StepStatus.DONE
    assert hosts.fenced_at_promote == [True]
    assert hosts.roles[world.id("db-2")] == "primary"
    assert set(hosts.databases.values()) == {"db-2"}
    assert await world.launched() == []  # the corrupt relaunch was stopped ...
    made = [i for i in await world.provider.instances(REGION) if i.tag(RUN_TAG)]
    assert [i.tag("drwatch:group") for i in made] == ["discarded:db"]  # ... and left the group


async def test_replica_down_restores_the_newest_snapshot(tmp_path: Path) -> None:
    """Volume corrupt and db-2 down: promote_replica says why it skipped, and the newest
    snapshot is restored."""
    world, deps, _ = db1_stopped()
    world.hosts.corrupt.add(world.data_volume)
    world.hosts.down.add(world.id("db-2"))
    progress = await recover(tmp_path, world, deps)
    steps = statuses(progress)
    assert steps["promote_replica"] == (StepStatus.SKIPPED, "replica db-2 is down")
    assert steps["restore_latest_snapshot"][0] is StepStatus.DONE
    assert world.snapshots[-1] in steps["restore_latest_snapshot"][1]


async def test_corrupt_newest_snapshot_walks_back_to_an_older_one(tmp_path: Path) -> None:
    """The newest snapshot is corrupt too: restore_older_snapshot picks the newest good one."""
    world, deps, _ = newest_snapshot_corrupt_replica_down()
    progress = await recover(tmp_path, world, deps)
    steps = statuses(progress)
    assert steps["restore_latest_snapshot"][0] is StepStatus.SKIPPED
    assert "corrupt" in steps["restore_latest_snapshot"][1]
    assert steps["restore_older_snapshot"][0] is StepStatus.DONE
    assert world.snapshots[1] in steps["restore_older_snapshot"][1]
    (good,) = await world.launched()  # the corrupt attempts were stopped
    volumes = {v.id: v for v in await world.provider.volumes(REGION)}
    assert volumes[good.volumes[0]].snapshot_id == world.snapshots[1]


async def test_nothing_verifies_fails_the_run_saying_why(tmp_path: Path) -> None:
    """Every snapshot corrupt and no replica: the run fails and the last rung says so."""
    world, deps, _ = db1_stopped()
    world.hosts.corrupt |= {world.data_volume, *world.snapshots}
    world.hosts.down.add(world.id("db-2"))
    progress = await run_plan(tmp_path / "j.db", deps, db_plan(world), owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.FAILED
    assert "no rung of the ladder recovered the database" in progress.detail


def effects(world: World) -> Counter[str]:
    """Provider calls by method, less those that made nothing: launches refused for
    capacity and retries answered from their client token."""
    fake = world.provider
    return Counter(c[0] for c in fake.calls) - Counter(c[0] for c in fake.refused + fake.replayed)


def lagging(
    setup: Callable[[], tuple[World, Deps, Plan]],
) -> Callable[[], tuple[World, Deps, Plan]]:
    """The same world, but what the provider creates is missing from its next 8 listings:
    a resumed run cannot trust describe to say whether its crashed attempt made anything."""

    def lagged() -> tuple[World, Deps, Plan]:
        world, deps, plan = setup()
        world.provider.lag_describes(8)
        return world, deps, plan

    lagged.__name__ = f"{setup.__name__}_with_describe_lag"
    return lagged


SETUPS = [
    db1_stopped,
    launches_fail_in_1a,
    volume_corrupt_db1_hung,
    newest_snapshot_corrupt_replica_down,
]


@pytest.mark.parametrize(
    "setup",
    [*SETUPS, *(lagging(s) for s in SETUPS)],
    ids=lambda s: s.__name__,
)
async def test_survives_a_crash_at_every_point(tmp_path: Path, setup: object) -> None:
    """Crash anywhere in the ladder, resume: the provider sees exactly the calls a clean run
    makes (one launch per rung tried, one snapshot, one volume, one fence...). A launch a
    zone refused for capacity, or a retry the provider answers from its client token,
    makes nothing: a resumed run may repeat those, so they are left out of the count.
    With describe lag, the resumed run cannot see what its crashed attempt made."""
    assert callable(setup)
    world, deps, plan = setup()
    await run_plan(tmp_path / "reference.db", deps, plan, owner="w0")
    expected = effects(world)
    assert expected["run_instance"] >= 1

    async def verify(w: World, point: str) -> None:
        assert effects(w) == expected, point

    await crash_at_every_point(tmp_path, setup, verify)


async def test_a_replica_is_never_recovered_as_the_primary(tmp_path: Path) -> None:
    """database.recover aimed at db-2 while db-1 answers as primary: the run fails at
    inspect saying db-2 is a replica, and nothing is launched, stopped or repointed."""
    world, deps = new_world()
    world.provider.set_state(world.id("db-2"), InstanceState.STOPPED)
    plan = Plan("inc-r", PlaybookName.DB_RECOVER, REGION, "us-east-1b", "db", (world.id("db-2"),))
    progress = await run_plan(tmp_path / "j.db", deps, plan, owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.FAILED
    assert progress.detail.startswith("db-2 is a replica (the primary is db-1)")
    assert world.provider.calls == []
    assert world.hosts.actions == []


async def test_a_replica_tagged_so_is_refused_even_when_no_primary_answers(
    tmp_path: Path,
) -> None:
    """Both databases down, db-2 tagged drwatch:db-role=replica: the tag is enough."""
    world, deps, _ = db1_stopped()
    await world.provider.tag(REGION, world.id("db-2"), (("drwatch:db-role", "replica"),))
    world.provider.set_state(world.id("db-2"), InstanceState.STOPPED)
    world.provider.calls.clear()
    plan = Plan("inc-r", PlaybookName.DB_RECOVER, REGION, "us-east-1b", "db", (world.id("db-2"),))
    progress = await run_plan(tmp_path / "j.db", deps, plan, owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.FAILED
    assert "is a replica" in progress.detail
    assert world.provider.calls == []


async def _db2_is_refused_with_both_databases_down(
    tmp_path: Path, world: World, deps: Deps
) -> None:
    """db-1 and db-2 stop (their agents fall silent); database.recover aimed at db-2 fails
    at inspect as a replica, and nothing is touched."""
    world.provider.set_state(world.id("db-1"), InstanceState.STOPPED)
    world.provider.set_state(world.id("db-2"), InstanceState.STOPPED)
    await world.hosts.refresh()
    plan = Plan("inc-r", PlaybookName.DB_RECOVER, REGION, "us-east-1b", "db", (world.id("db-2"),))
    progress = await run_plan(tmp_path / "j.db", deps, plan, owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.FAILED
    assert progress.detail.startswith("db-2 is a replica:")
    assert world.provider.calls == []


async def test_a_replica_is_refused_on_the_role_it_reported_before_it_died(
    tmp_path: Path,
) -> None:
    """Both databases down and untagged: the runner remembers that db-2's agent said
    `replica` while it still answered, and refuses to make it the primary."""
    world, deps = new_world()
    await world.hosts.refresh()  # the daemon's view while everything answers
    deps.roles.observe(world.hosts.latest())
    await _db2_is_refused_with_both_databases_down(tmp_path, world, deps)


async def test_a_replica_is_refused_on_a_role_remembered_before_drwatch_restarted(
    tmp_path: Path,
) -> None:
    """The role db-2 reported was written to the incident store; drwatch restarts with a
    fresh runner, both databases are down and untagged, and db-2 is still refused."""
    world, deps = new_world()
    await world.hosts.refresh()
    store = IncidentStore(tmp_path / "state")
    RoleMemory(store).observe(world.hosts.latest())  # the run before the restart
    store.close()
    restarted = replace(deps, roles=RoleMemory(IncidentStore(tmp_path / "state")))
    await _db2_is_refused_with_both_databases_down(tmp_path, world, restarted)


async def test_a_standby_is_a_replica_to_the_playbook_as_to_the_decision(tmp_path: Path) -> None:
    """An agent that calls its database `standby` (PostgreSQL's word) is refused like
    `replica`: decide and act agree on which roles are not the primary."""
    world, deps = new_world()
    world.hosts.roles[world.id("db-2")] = "standby"
    await world.hosts.refresh()
    deps.roles.observe(world.hosts.latest())
    await _db2_is_refused_with_both_databases_down(tmp_path, world, deps)
