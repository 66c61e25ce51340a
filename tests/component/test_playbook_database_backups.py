"""database.recover with drwatch's backup catalogue: rungs 4 and 5 restore only verified
snapshots, newest first; rung 6 restores the newest verified dump after an approval."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from drwatch.act.base import BackupRef, Deps, NoDumpRestore
from drwatch.act.testing import (
    FakeCatalogue,
    ManualApprovals,
    World,
    crash_at_every_point,
    new_world,
    run_plan,
)
from drwatch.model.fleet import DB_ROLE_TAG, InstanceState
from drwatch.model.plan import Plan, RunOutcome, StepStatus
from tests.component.test_playbook_database import db_plan, statuses

NOW = 1_000_000.0
DUMP = b"PGDMP" + bytes(range(256)) * 100


def snap_ref(world: World, k: int, state: str = "verified", why: str = "") -> BackupRef:
    """The catalogue's row for db-1-data-snap-k (taken at 1000*k): its own backup id, the
    provider's snapshot id as its resource."""
    return BackupRef(f"orders-snap-{k}", "orders", "volume_snapshot", "primary", 1000.0 * k,
                     state, why, resource=world.snapshots[k - 1])  # fmt: skip


def dump_ref(n: int, at: float, state: str = "verified") -> BackupRef:
    return BackupRef(f"orders-dump-{n}", "orders", "dump", "primary", at, state)


def catalogued(
    world: World, deps: Deps, catalogue: FakeCatalogue
) -> tuple[World, Deps, ManualApprovals]:
    approvals = ManualApprovals()
    deps = replace(
        deps, backups=catalogue, dump_restore=world.hosts, approvals=approvals, clock=_Clock()
    )
    return world, deps, approvals


class _Clock:
    def now(self) -> float:
        return NOW

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def db1_and_replica_down(world: World) -> None:
    world.provider.set_state(world.id("db-1"), InstanceState.STOPPED)
    world.hosts.corrupt.add(world.data_volume)
    world.hosts.down.add(world.id("db-2"))


async def test_rung_4_restores_the_newest_verified_snapshot_not_the_newest(
    tmp_path: Path,
) -> None:
    """snap-3 is corrupt in the catalogue (verification found it so): it is never
    mounted; snap-2, the newest verified, is restored, and inspect says why snap-3 is not."""
    world, deps = new_world()
    db1_and_replica_down(world)
    refs = [
        snap_ref(world, 3, "corrupt", "one byte changed"),
        snap_ref(world, 2),
        snap_ref(world, 1),
    ]
    world, deps, _ = catalogued(world, deps, FakeCatalogue(snapshot_refs=refs))
    progress = await run_plan(tmp_path / "j.db", deps, db_plan(world), owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
    steps = statuses(progress)
    assert f"not usable: {world.snapshots[2]} (corrupt: one byte changed)" in steps["inspect"][1]
    assert steps["restore_latest_snapshot"][0] is StepStatus.DONE
    assert world.snapshots[1] in steps["restore_latest_snapshot"][1]
    volumes = {v.snapshot_id for v in await world.provider.volumes("us-east-1")}
    assert world.snapshots[2] not in volumes


async def test_a_verified_snapshot_that_restores_corrupt_is_marked_and_rung_5_says_so(
    tmp_path: Path,
) -> None:
    """The catalogue verified snap-3 (it completed) but its data is corrupt: rung 4 marks
    it bad in the catalogue; rung 5 restores snap-2 and names the bad newest backup."""
    world, deps = new_world()
    db1_and_replica_down(world)
    world.hosts.corrupt.add(world.snapshots[2])
    refs = [snap_ref(world, 3), snap_ref(world, 2), snap_ref(world, 1)]
    catalogue = FakeCatalogue(snapshot_refs=refs)
    world, deps, _ = catalogued(world, deps, catalogue)
    progress = await run_plan(tmp_path / "j.db", deps, db_plan(world), owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
    steps = statuses(progress)
    assert steps["restore_older_snapshot"][0] is StepStatus.DONE
    assert (
        f"the newest verified backup {world.snapshots[2]} was bad: it restored corrupt"
        in steps["restore_older_snapshot"][1]
    )
    assert [m[0] for m in catalogue.marked] == ["orders-snap-3"]
    assert "database.recover" in catalogue.marked[0][1]
    assert steps["restore_from_dump"][0] is StepStatus.SKIPPED
    assert catalogue.streamed == 0


def every_snapshot_corrupt(
    holds_key: bool = True, approved: bool = True
) -> tuple[World, Deps, Plan, FakeCatalogue, ManualApprovals]:
    world, deps = new_world()
    db1_and_replica_down(world)
    world.hosts.corrupt |= set(world.snapshots)
    catalogue = FakeCatalogue(
        snapshot_refs=[snap_ref(world, k) for k in (3, 2, 1)],
        dump_refs=[dump_ref(3, NOW - 50, "corrupt"), dump_ref(2, NOW - 90), dump_ref(1, NOW - 900)],
        dumps_data={"orders-dump-2": DUMP, "orders-dump-1": b"older"},
        holds_key=holds_key,
    )
    world, deps, approvals = catalogued(world, deps, catalogue)
    plan = db_plan(world)
    if approved:
        approvals.approve(plan.incident_id)
    return world, deps, plan, catalogue, approvals


async def test_no_snapshot_verifies_and_the_watcher_holds_no_key_fails_saying_why(
    tmp_path: Path,
) -> None:
    _world, deps, plan, catalogue, approvals = every_snapshot_corrupt(holds_key=False)
    progress = await run_plan(tmp_path / "j.db", deps, plan, owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.FAILED
    steps = statuses(progress)
    assert steps["restore_from_dump"] == (
        StepStatus.SKIPPED,
        "the watcher cannot decrypt a dump: no private key (backup.watcher_private_key_file)",
    )
    assert "no rung of the ladder recovered the database" in progress.detail
    assert "restore_from_dump: the watcher cannot decrypt a dump" in progress.detail
    assert catalogue.streamed == 0
    assert approvals.requests == []


async def test_rung_6_waits_for_approval_then_restores_the_newest_verified_dump(
    tmp_path: Path,
) -> None:
    """Every snapshot restores corrupt: the run asks for approval and waits; once an
    operator approves, dump 2 (the newest verified: dump 3 is corrupt) is streamed once
    into a new host, which becomes the primary; the data lost is the dump's age."""
    world, deps, plan, _catalogue, approvals = every_snapshot_corrupt(approved=False)
    task = asyncio.create_task(run_plan(tmp_path / "j.db", deps, plan, owner="w1", within=60))
    for _ in range(2000):
        if approvals.requests:
            break
        await asyncio.sleep(0.01)
    assert approvals.requests == [
        (
            plan.incident_id,
            "restore_from_dump: restore dump orders-dump-2 of orders onto a new host "
            "(data lost: 90 s)",
        )
    ]
    assert world.hosts.restores == []  # nothing before the approval
    approvals.approve(plan.incident_id, by="sam")
    progress = await task
    assert progress is not None
    assert progress.outcome is RunOutcome.SUCCEEDED, progress.detail
    steps = statuses(progress)
    assert steps["restore_older_snapshot"][0] is StepStatus.SKIPPED
    assert steps["restore_from_dump"][0] is StepStatus.DONE
    assert "restored dump orders-dump-2 (primary), approved by sam" in steps["restore_from_dump"][1]
    assert "data lost: the dump's age, 90 s" in steps["restore_from_dump"][1]
    (host,) = await world.launched()
    assert world.hosts.restores == [(host.id, "orders-dump-2", len(DUMP))]
    assert world.hosts.restored_data[host.id][1] == DUMP
    assert set(world.hosts.databases.values()) == {host.tag("Name")}
    assert host.tag(DB_ROLE_TAG) == "primary"
    assert progress.new_instances == (host.id,)


async def test_rung_6_without_a_verified_dump_is_skipped_with_the_reason(tmp_path: Path) -> None:
    _world, deps, plan, catalogue, _ = every_snapshot_corrupt()
    catalogue.dump_refs = [dump_ref(3, NOW - 50, "corrupt")]
    progress = await run_plan(tmp_path / "j.db", deps, plan, owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.FAILED
    assert statuses(progress)["restore_from_dump"] == (
        StepStatus.SKIPPED,
        "no verified dump of this group in drwatch's catalogue",
    )


def effects(world: World) -> Counter[str]:
    fake = world.provider
    return Counter(c[0] for c in fake.calls) - Counter(c[0] for c in fake.refused + fake.replayed)


@pytest.mark.parametrize("lag", [False, True], ids=["no-lag", "describe-lag"])
async def test_rung_6_survives_a_crash_at_every_point(tmp_path: Path, lag: bool) -> None:
    """Killed anywhere (the approval already given), resumed: the provider sees exactly
    the clean run's calls and the dump is restored into exactly one host, once."""

    def setup() -> tuple[World, Deps, Plan]:
        world, deps, plan, _, _ = every_snapshot_corrupt()
        if lag:
            world.provider.lag_describes(8)
        return world, deps, plan

    world, deps, plan = setup()
    await run_plan(tmp_path / "reference.db", deps, plan, owner="w0")
    expected = effects(world)

    async def verify(w: World, point: str) -> None:
        assert effects(w) == expected, point
        assert [(b, n) for _, b, n in w.hosts.restores] == [("orders-dump-2", len(DUMP))], point

    points = await crash_at_every_point(tmp_path, setup, verify)
    assert any("restore:orders-dump-2" in p for p in points)


async def test_rung_6_without_a_channel_into_the_new_host_is_skipped_before_approval(
    tmp_path: Path,
) -> None:
    """The daemon's default: no dump stream into a host is wired, so rung 6 says so and
    asks nobody for an approval it could not use."""
    _world, deps, plan, catalogue, approvals = every_snapshot_corrupt(approved=False)
    deps = replace(deps, dump_restore=NoDumpRestore())
    progress = await run_plan(tmp_path / "j.db", deps, plan, owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.FAILED
    status, detail = statuses(progress)["restore_from_dump"]
    assert status is StepStatus.SKIPPED
    assert detail.startswith("this build has no channel to stream a dump into a new database host")
    assert (approvals.requests, catalogue.streamed) == ([], 0)


async def test_a_restore_that_breaks_closes_the_decrypting_stream_and_fails_the_run(
    tmp_path: Path,
) -> None:
    """The connection to the new host breaks mid-restore: the step fails saying so, and
    the plaintext stream is closed at once (gpg stopped, its key home removed)."""
    world, deps, plan, catalogue, _ = every_snapshot_corrupt()
    world.hosts.fail_restores = True
    progress = await run_plan(tmp_path / "j.db", deps, plan, owner="w1")
    assert progress is not None
    assert progress.outcome is RunOutcome.FAILED
    assert "restoring orders-dump-2 into" in progress.detail
    assert "the connection broke mid-restore" in progress.detail
    assert (catalogue.streamed, catalogue.closed) == (1, 1)
