"""`database.recover`: the ladder of DESIGN.md, in order, each rung skipped with its reason.

Steps:

0. `inspect`: the old primary, its data volume, its snapshots (newest first), the
   replicas, and what the agent last said of its data. Journaled, so a resumed run
   climbs the same ladder.
1. `fence_old_primary`: stop the old primary through the provider, BEFORE anything is
   promoted or mounted elsewhere.
2. `relaunch_same_zone`: a new instance in the old zone mounts the old volume.
3. `restore_volume_elsewhere`: the launch failed but the volume lives: snapshot it,
   launch in another zone, make a volume there from the snapshot, mount it.
4. `promote_replica`: the volume is corrupt (the agent's integrity check says so):
   promote a healthy replica through its agent.
5. `restore_latest_snapshot`: the replica is down or corrupt: a new volume from the
   newest snapshot.
6. `restore_older_snapshot`: that one is corrupt too: walk back until one verifies.
7. `restore_from_dump`: no snapshot verifies: the newest verified portable dump, decrypted
   on the watcher (only when it holds the private key) and streamed over the agent's
   authenticated, encrypted channel into a new database host; after an operator's approval.
8. `repoint_app_servers`: tag the new primary and tell every app server where it is.

With backups configured (`[backup]`, a class holding this group), rungs 4 and 5 restore
only snapshots drwatch's catalogue has verified, newest first; a snapshot the catalogue
verified that restores corrupt is marked bad there (the alert `backup_unrestorable`).
Without a catalogue, they use the provider's completed snapshots of the data volume.

A rung whose new host reports the data corrupt stops that host and is recorded as
skipped with the reason; the next rung runs. Once a rung has a primary, the rest skip.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from drwatch.act.base import (
    GROUP_TAG,
    JSON,
    RUN_TAG,
    BackupRef,
    GroupInfo,
    Outcome,
    Playbook,
    RunContext,
    Step,
    StepError,
    database_integrity,
    done,
    is_up,
    skipped,
)
from drwatch.act.playbooks.common import (
    attach,
    cloud_instance,
    copied_tags,
    create_once,
    detach,
    group_info,
    healthy_zones,
    image_for,
    launch,
    require_instance,
    stop,
    tag_primary,
    try_agent_action,
    user_data,
    volume,
    wait_healthy,
    wait_running,
)
from drwatch.errors import DrwatchError, ProviderError
from drwatch.model.fleet import Instance, Role
from drwatch.model.observation import Layer
from drwatch.model.plan import PlaybookName
from drwatch.model.snapshot import Snapshot
from drwatch.providers.base import CloudInstance, SnapshotInfo, Tags, VolumeInfo
from drwatch.roles import role_of

RUNGS = (
    "relaunch_same_zone",
    "restore_volume_elsewhere",
    "promote_replica",
    "restore_latest_snapshot",
    "restore_older_snapshot",
    "restore_from_dump",
)
DUMP_APPROVAL = "restore_from_dump"
# A host launched for a dump starts an empty PostgreSQL of its own (no data volume).
DB_INIT_KEY = "DRWATCH_DB_INIT"
DB_INIT_TAG = "drwatch:db-init"
_ROOT_DEVICES = frozenset({"/dev/sda1", "/dev/xvda", "/dev/sda", "/dev/nvme0n1"})
_DEAD_VOLUME = frozenset({"error", "deleting", "deleted"})
DISCARDED_TAG = "drwatch:discarded"


def _group(ctx: RunContext) -> GroupInfo:
    return group_info(ctx, Role.DATABASE)


def _facts(ctx: RunContext) -> JSON:
    return ctx.results["inspect"]


def _primary(ctx: RunContext) -> tuple[str, str] | None:
    """(rung, instance id) of the rung that recovered the database, if one has."""
    for rung in RUNGS:
        primary = ctx.results.get(rung, {}).get("primary")
        if primary:
            return rung, primary
    return None


def _data_volume(volumes: list[VolumeInfo], old_id: str, device: str) -> VolumeInfo | None:
    mine = [v for v in volumes if v.attached_to == old_id and v.device not in _ROOT_DEVICES]
    preferred = [v for v in mine if v.device == device]
    found = preferred or mine
    return found[0] if found else None


async def _snapshots_of(ctx: RunContext, vol: VolumeInfo | None) -> list[str]:
    """Completed snapshots of the data volume, newest first; never ones a run made."""
    if vol is None:
        return []
    name = dict(vol.tags).get("Name")
    snaps = [
        s
        for s in await ctx.deps.provider.snapshots(ctx.plan.region)
        if s.state == "completed"
        and dict(s.tags).get(RUN_TAG) is None
        and (s.volume_id == vol.id or (name and dict(s.tags).get("Name", "").startswith(name)))
    ]
    return [s.id for s in sorted(snaps, key=lambda s: s.started_at, reverse=True)]


def _not_the_primary(ctx: RunContext, snap: Snapshot, old: CloudInstance | Instance) -> str | None:
    """Why the target must not be recovered as the primary, or None. Relaunching a
    replica's volume as a primary and repointing the apps at it would split the data."""
    name = old.tag("Name") or old.id
    role, _ = role_of(old, snap, ctx.deps.roles.known())
    live_primary = next(
        (
            i
            for i in snap.fleet.in_group(ctx.plan.group)
            if i.id != old.id
            and not i.state.is_gone
            and is_up(snap, i.id, Layer.AGENT)
            and role_of(i, snap)[0] == "primary"
        ),
        None,
    )
    if role == "replica" or live_primary is not None:
        primary = f" (the primary is {live_primary.name})" if live_primary else ""
        return (
            f"{name} is a replica{primary}: database.recover recovers a primary; "
            "rebuilding a replica is not automated"
        )
    return None


async def inspect(ctx: RunContext) -> Outcome:
    old_id = ctx.plan.targets[0]
    snap = await ctx.deps.fleet.refresh()
    old = await cloud_instance(ctx, old_id)
    known = old or snap.fleet.get(old_id)
    if known is None:
        raise StepError(f"{old_id} is not known to the provider or the fleet")
    if (why := _not_the_primary(ctx, snap, known)) is not None:
        raise StepError(why)
    vol = _data_volume(
        await ctx.deps.provider.volumes(ctx.plan.region), old_id, ctx.deps.settings.data_device
    )
    replicas = sorted(
        (i for i in snap.fleet.in_group(ctx.plan.group) if i.id != old_id),
        key=lambda i: i.name,
    )
    snapshots, catalogued = await _ladder_snapshots(ctx, vol)
    facts: JSON = {
        "old": old_id,
        "name": known.tag("Name") or old_id,
        "zone": known.zone,
        "image_id": await image_for(ctx, old, Role.DATABASE),
        "tags": copied_tags(known, ctx.plan.group, Role.DATABASE),
        "volume": vol.id if vol else None,
        "volume_corrupt": database_integrity(snap, old_id) is False,
        "snapshots": snapshots,
        "catalogue": catalogued,
        "replicas": [i.id for i in replicas],
    }
    source = "verified snapshots in drwatch's catalogue" if catalogued is not None else "snapshots"
    return done(
        f"old primary {facts['name']} in {known.zone}; data volume {facts['volume']}; "
        f"{len(snapshots)} {source}; replicas {facts['replicas']}"
        + ("; its last integrity check said corrupt" if facts["volume_corrupt"] else "")
        + "".join(f"; not usable: {n}" for n in (catalogued or {}).get("unusable", [])),
        **facts,
    )


async def _ladder_snapshots(
    ctx: RunContext, vol: VolumeInfo | None
) -> tuple[list[str], JSON | None]:
    """The snapshots rungs 4 and 5 try, newest first, and what the catalogue said of them
    (None without a catalogue: then the provider's completed snapshots of the volume)."""
    refs = ctx.deps.backups.snapshots(ctx.plan.group)
    if refs is None:
        return await _snapshots_of(ctx, vol), None
    at_provider = {
        s.id for s in await ctx.deps.provider.snapshots(ctx.plan.region) if s.state == "completed"
    }
    usable = [r for r in refs if r.state == "verified" and r.snapshot_id in at_provider]
    newest_ok = usable[0].created_at if usable else float("-inf")
    newer = [r for r in refs if r not in usable and r.created_at >= newest_ok]
    unusable = [_unusable(r) for r in newer[:3]]
    return [r.snapshot_id for r in usable], {
        "refs": {r.snapshot_id: _ref_json(r) for r in usable},
        "unusable": unusable,
    }


def _unusable(r: BackupRef) -> str:
    name = r.snapshot_id if r.resource else r.backup_id
    if r.state != "verified":
        return f"{name} ({r.state}{': ' + r.why if r.why else ''})"
    return f"{name} (verified, but the provider no longer lists it completed)"


def _ref_json(r: BackupRef) -> JSON:
    return {
        "backup_id": r.backup_id,
        "data_class": r.data_class,
        "kind": r.kind,
        "location": r.location,
        "created_at": r.created_at,
        "state": r.state,
        "resource": r.resource,
    }


def _ref(d: JSON) -> BackupRef:
    return BackupRef(
        d["backup_id"],
        d["data_class"],
        d["kind"],
        d["location"],
        d["created_at"],
        d["state"],
        resource=d.get("resource", ""),
    )


async def fence_old_primary(ctx: RunContext) -> Outcome:
    old = _facts(ctx)["old"]
    result = await stop(ctx, "stop", old)
    return done(f"{old} {'was already stopped' if result.get('already') else 'stopped'}")


# -- mounting data on a new host ---------------------------------------------------------


async def _launch_db(
    ctx: RunContext, key: str, zones: list[str], suffix: str, *, empty: bool = False
) -> CloudInstance | str:
    """A new database host in the first zone that accepts it, running; or why not. A host
    an earlier attempt already judged is returned as it is (it may be stopped). `empty`:
    its image starts an empty PostgreSQL without waiting for a data volume (rung 6)."""
    facts = _facts(ctx)
    init = {DB_INIT_KEY: "empty"} if empty else {}
    params = {
        "zones": zones,
        "image_id": facts["image_id"],
        "user_data": user_data({"DRWATCH_DB_ROLE": "primary", **init}),
        "tags": {**facts["tags"], **({DB_INIT_TAG: "empty"} if empty else {})},
    }
    try:
        result = await launch(ctx, key, params)
    except StepError as err:
        return str(err)
    if await _verdict(ctx, suffix) is not None:
        return await require_instance(ctx, result["instance_id"])
    return await wait_running(ctx, result["instance_id"])


async def _verdict(ctx: RunContext, suffix: str) -> bool | None:
    """The journaled integrity verdict of an earlier attempt of this step, if any."""
    memo = await ctx.recorded(f"verdict{suffix}")
    return None if memo is None else bool(memo["ok"])


async def _verified(ctx: RunContext, instance_id: str, suffix: str) -> bool:
    """The new host's agent checks the data it mounted; the verdict is journaled, and a
    corrupt host is stopped (so a re-run neither waits for it nor trusts it)."""
    snap = await wait_healthy(ctx, instance_id, app=_group(ctx).has_app_checks)
    ok = database_integrity(snap, instance_id) is not False
    await ctx.memo(f"verdict{suffix}", {"ok": ok})
    return ok


async def _discard(ctx: RunContext, instance_id: str, suffix: str) -> None:
    """Take a host whose data is corrupt out of the group, then stop it. Out of the group
    first: a stopped member would look like a new failure and open another incident."""
    released = ((GROUP_TAG, f"discarded:{ctx.plan.group}"), (DISCARDED_TAG, ctx.run_id))

    async def check(p: JSON) -> JSON | None:
        inst = await cloud_instance(ctx, p["instance_id"])
        return {"already": True} if inst is None or inst.tag(DISCARDED_TAG) else None

    async def apply(p: JSON) -> JSON:
        await ctx.deps.provider.tag(ctx.plan.region, p["instance_id"], released)
        return {}

    await ctx.effect(f"release{suffix}", {"instance_id": instance_id}, check=check, apply=apply)
    await _out_of_the_group(ctx, instance_id)
    await stop(ctx, f"discard{suffix}", instance_id)


async def _out_of_the_group(ctx: RunContext, instance_id: str) -> None:
    """Rediscover until drwatch's own fleet no longer counts the host in the group: one
    stopped while the daemon still counts it opens a second incident (seen in drills on
    a loaded machine). A describe that lags past `describe_lag` is waited out no longer:
    the stop goes ahead, as it did before this check."""

    async def gone() -> bool | None:
        snap = await ctx.deps.fleet.refresh()
        member = any(i.id == instance_id for i in snap.fleet.in_group(ctx.plan.group))
        return None if member else True

    with contextlib.suppress(StepError):
        await ctx.wait_for(
            f"{instance_id} to leave the group", gone, ctx.deps.settings.describe_lag
        )


async def _restore_snapshot(ctx: RunContext, snapshot_id: str) -> CloudInstance | str | None:
    """Launch, make a volume from `snapshot_id` in the new host's zone, mount, verify.
    The host on success; text when no zone took the launch; None when the data is corrupt."""
    suffix = f":{snapshot_id}"
    host = await _launch_db(ctx, f"launch{suffix}", await _zones_old_first(ctx), suffix)
    if isinstance(host, str):
        return host
    ok = await _verdict(ctx, suffix)
    if ok is None:
        vol_id = await _volume_from(ctx, f"volume{suffix}", snapshot_id, host.zone)
        await attach(ctx, f"attach{suffix}", vol_id, host.id)
        ok = await _verified(ctx, host.id, suffix)
    if not ok:
        await _discard(ctx, host.id, suffix)
    return host if ok else None


async def _volume_from(ctx: RunContext, key: str, snapshot_id: str, zone: str) -> str:
    """A volume from the snapshot, made once: found by this run's tags, and created with a
    client token, so a retry whose describe lags gets the same volume back."""

    async def check(p: JSON) -> JSON | None:
        found = _tagged(await ctx.deps.provider.volumes(ctx.plan.region), ctx.tags(key))
        return {"volume_id": found} if found else None

    async def apply(p: JSON) -> JSON:
        vol_id = await ctx.deps.provider.create_volume(
            ctx.plan.region,
            p["zone"],
            p["snapshot_id"],
            ctx.tags(key),
            client_token=ctx.token(key),
        )
        return {"volume_id": vol_id}

    params = {"snapshot_id": snapshot_id, "zone": zone}
    result = await ctx.effect(key, params, check=check, apply=apply)
    vol_id: str = result["volume_id"]
    await _wait_volume_available(ctx, vol_id)
    return vol_id


def _tagged(resources: Sequence[VolumeInfo | SnapshotInfo], tags: Tags) -> str | None:
    wanted = dict(tags)
    for r in resources:
        if all(dict(r.tags).get(k) == v for k, v in wanted.items()):
            found: str = r.id
            return found
    return None


async def _wait_volume_available(ctx: RunContext, vol_id: str) -> None:
    async def probe() -> bool | None:
        vol = await volume(ctx, vol_id)
        if vol is not None and vol.state in _DEAD_VOLUME:
            raise StepError(f"volume {vol_id} is {vol.state}")
        return True if vol is not None and vol.state in ("available", "in-use") else None

    await ctx.wait_for(f"volume {vol_id}", probe, ctx.deps.settings.volume_timeout)


async def _zones_old_first(ctx: RunContext) -> list[str]:
    healthy = await healthy_zones(ctx)
    old_zone = _facts(ctx)["zone"]
    return [old_zone] * (old_zone in healthy) + [z for z in healthy if z != old_zone]


def _not_needed(ctx: RunContext) -> Outcome | None:
    found = _primary(ctx)
    if found is None:
        return None
    return skipped(f"not needed: {found[0]} recovered the database on {found[1]}")


def _volume_known_corrupt(ctx: RunContext) -> bool:
    return bool(
        _facts(ctx)["volume_corrupt"] or ctx.results.get("relaunch_same_zone", {}).get("corrupt")
    )


# -- the rungs ---------------------------------------------------------------------------


async def _move_volume(ctx: RunContext, vol: str, old_id: str, new_id: str) -> None:
    current = await volume(ctx, vol)
    if current is not None and current.attached_to == old_id:
        await detach(ctx, "detach", vol, old_id)
    await attach(ctx, "attach", vol, new_id)


async def relaunch_same_zone(ctx: RunContext) -> Outcome:
    facts = _facts(ctx)
    vol, zone = facts["volume"], facts["zone"]
    if vol is None:
        return skipped(f"{facts['name']} has no data volume to mount")
    if facts["volume_corrupt"]:
        return skipped(
            f"the agent's last integrity check on {facts['name']} said its data is corrupt"
        )
    if zone not in await healthy_zones(ctx):
        return skipped(f"{zone} is not healthy (or the plan avoids it)")
    host = await _launch_db(ctx, "launch", [zone], "")
    if isinstance(host, str):
        return skipped(f"launch in {zone} failed: {host}", launch_failed=True)
    ok = await _verdict(ctx, "")
    if ok is None:
        await _move_volume(ctx, vol, facts["old"], host.id)
        ok = await _verified(ctx, host.id, "")
    if not ok:
        await _discard(ctx, host.id, "")
        return skipped(f"volume {vol} is corrupt (integrity check on {host.id})", corrupt=True)
    return done(
        f"{host.id} in {zone} mounted {vol}; integrity ok", primary=host.id, launched=[host.id]
    )


async def _volume_unusable(ctx: RunContext) -> str | None:
    """Why the old volume cannot be copied elsewhere, or None when it can."""
    facts = _facts(ctx)
    if facts["volume"] is None:
        return f"{facts['name']} has no data volume"
    if _volume_known_corrupt(ctx):
        return f"volume {facts['volume']} is corrupt"
    current = await volume(ctx, facts["volume"])
    if current is None or current.state in _DEAD_VOLUME:
        return f"volume {facts['volume']} is gone"
    return None


async def restore_volume_elsewhere(ctx: RunContext) -> Outcome:
    facts = _facts(ctx)
    if (not_needed := _not_needed(ctx)) is not None:
        return not_needed
    if (why := await _volume_unusable(ctx)) is not None:
        return skipped(why)
    try:
        snap_id = await _snapshot(ctx, "snapshot", facts["volume"])
    except (ProviderError, StepError) as err:  # a volume in a zone that is out
        return skipped(f"cannot snapshot volume {facts['volume']}: {err}")
    host = await _restore_snapshot(ctx, snap_id)
    if isinstance(host, str):
        return skipped(f"no zone took the launch: {host}")
    if host is None:
        return skipped(f"the copy of {facts['volume']} (via {snap_id}) is corrupt", corrupt=True)
    return done(
        f"{host.id} in {host.zone} mounted a copy of {facts['volume']} via {snap_id}",
        primary=host.id,
        launched=[host.id],
    )


async def _snapshot(ctx: RunContext, key: str, volume_id: str) -> str:
    """A snapshot of the volume, made once. CreateSnapshot takes no client token: it is
    found by this run's tags and journaled (`create_once`)."""

    async def find(p: JSON) -> JSON | None:
        found = _tagged(await ctx.deps.provider.snapshots(ctx.plan.region), ctx.tags(key))
        return {"snapshot_id": found} if found else None

    async def create(p: JSON) -> JSON:
        snap_id = await ctx.deps.provider.create_snapshot(
            ctx.plan.region, p["volume_id"], ctx.tags(key)
        )
        return {"snapshot_id": snap_id}

    result = await create_once(ctx, key, {"volume_id": volume_id}, find=find, create=create)
    snap_id: str = result["snapshot_id"]

    async def completed() -> bool | None:
        snaps = await ctx.deps.provider.snapshots(ctx.plan.region)
        state = next((s.state for s in snaps if s.id == snap_id), None)
        if state == "error":
            raise StepError(f"snapshot {snap_id} failed")
        return True if state == "completed" else None

    await ctx.wait_for(f"snapshot {snap_id}", completed, ctx.deps.settings.snapshot_timeout)
    return snap_id


async def promote_replica(ctx: RunContext) -> Outcome:
    if (not_needed := _not_needed(ctx)) is not None:
        return not_needed
    snap = await ctx.deps.fleet.refresh()
    healthy = set(await healthy_zones(ctx))
    reasons = []
    for replica_id in _facts(ctx)["replicas"]:
        inst = snap.fleet.get(replica_id)
        if inst is None or inst.state.is_gone or not is_up(snap, replica_id, Layer.AGENT):
            reasons.append(f"replica {inst.name if inst else replica_id} is down")
        elif inst.zone not in healthy:
            reasons.append(f"replica {inst.name} is in {inst.zone}, which is not healthy")
        elif database_integrity(snap, replica_id) is False:
            reasons.append(f"replica {inst.name} reports its data corrupt")
        else:
            err = await try_agent_action(ctx, f"promote:{replica_id}", inst, "promote", {})
            if err is None:
                return done(f"promoted {inst.name} ({replica_id})", primary=replica_id)
            reasons.append(f"promote failed on {err}")
    return skipped("; ".join(reasons) or "no replica")


async def restore_latest_snapshot(ctx: RunContext) -> Outcome:
    if (not_needed := _not_needed(ctx)) is not None:
        return not_needed
    snapshots = _facts(ctx)["snapshots"]
    if not snapshots:
        if _facts(ctx)["catalogue"] is not None:
            return skipped(_no_verified_snapshot(ctx))
        return skipped("no snapshot of the data volume")
    host = await _restore_snapshot(ctx, snapshots[0])
    if isinstance(host, str):
        return skipped(f"no zone took the launch: {host}")
    if host is None:
        _mark_bad(ctx, snapshots[0])
        return skipped(f"the newest snapshot {snapshots[0]} is corrupt", corrupt=True)
    return done(
        f"{host.id} in {host.zone} restored {snapshots[0]}", primary=host.id, launched=[host.id]
    )


def _no_verified_snapshot(ctx: RunContext) -> str:
    unusable = _facts(ctx)["catalogue"]["unusable"]
    return "no verified snapshot in drwatch's catalogue" + (
        f" (newest: {unusable[0]})" if unusable else ""
    )


def _mark_bad(ctx: RunContext, snapshot_id: str) -> None:
    """A snapshot the catalogue had verified restored corrupt: the catalogue learns it
    (no side effect outside drwatch: marking twice after a resume changes nothing)."""
    catalogued = _facts(ctx)["catalogue"]
    if catalogued is None or snapshot_id not in catalogued["refs"]:
        return
    ctx.deps.backups.mark_bad(
        _ref(catalogued["refs"][snapshot_id]),
        f"database.recover ({ctx.run_id}): restored, and the new host's agent found the "
        "data corrupt",
    )


async def restore_older_snapshot(ctx: RunContext) -> Outcome:
    if (not_needed := _not_needed(ctx)) is not None:
        return not_needed
    snapshots = _facts(ctx)["snapshots"]
    if not snapshots:
        return _skip(
            _no_verified_snapshot(ctx)
            if _facts(ctx)["catalogue"] is not None
            else "no snapshot of the data volume"
        )
    corrupt: list[str] = [snapshots[0]]
    bad_newest = _newest_was_bad(ctx, snapshots[0])
    for snapshot_id in snapshots[1:]:
        host = await _restore_snapshot(ctx, snapshot_id)
        if isinstance(host, str):
            raise StepError(f"no zone took the launch: {host}")
        if host is not None:
            return done(
                f"{host.id} in {host.zone} restored {snapshot_id}; {bad_newest} "
                f"(corrupt: {', '.join(corrupt)})",
                primary=host.id,
                launched=[host.id],
                newest_bad=bad_newest,
            )
        _mark_bad(ctx, snapshot_id)
        corrupt.append(snapshot_id)
    return _skip(f"no snapshot verifies; corrupt: {', '.join(corrupt)}", corrupt=corrupt)


def _skip(reason: str, **result: Any) -> Outcome:
    """A skip the final error repeats, when no rung recovered the database."""
    return skipped(reason, why=reason, **result)


def _newest_was_bad(ctx: RunContext, snapshot_id: str) -> str:
    """The words of rung 5's alert: which backup was bad, and why."""
    catalogued = _facts(ctx)["catalogue"]
    if catalogued is None:
        return f"the newest snapshot {snapshot_id} was bad: it restored corrupt"
    newer = "".join(f"; newer, not verified: {n}" for n in catalogued["unusable"])
    return (
        f"the newest verified backup {snapshot_id} was bad: it restored corrupt "
        f"(marked so in the catalogue){newer}"
    )


# -- rung 6: a portable dump ---------------------------------------------------------------


async def restore_from_dump(ctx: RunContext) -> Outcome:
    """The newest verified dump onto a new database host, after an operator's approval.

    The dump is decrypted on the watcher, in memory, and its plaintext streamed to the new
    host over the agent's channel (TLS, requests signed for that instance): the private
    key never leaves the watcher and the plaintext never touches the watcher's disk. The
    data lost is the dump's age when this rung chose it (journaled, so a resumed run
    restores the same dump)."""
    if (not_needed := _not_needed(ctx)) is not None:
        return not_needed
    if (why := ctx.deps.backups.key_missing()) is not None:
        return _skip(f"the watcher cannot decrypt a dump: {why}")
    if (why := ctx.deps.dump_restore.missing()) is not None:
        return _skip(why)
    chosen = await _chosen_dump(ctx)
    if chosen is None:
        return _skip("no verified dump of this group in drwatch's catalogue")
    ref, age = _ref(chosen["ref"]), float(chosen["age_s"])
    by = await _approval(ctx, ref, age)
    zones = await _zones_old_first(ctx)
    host = await _launch_db(ctx, "launch:dump", zones, ":dump", empty=True)
    if isinstance(host, str):
        raise StepError(f"no zone took the launch of a host for {ref.backup_id}: {host}")
    ok = await _verdict(ctx, ":dump")
    if ok is None:
        await wait_healthy(ctx, host.id, app=False)
        await _stream_dump(ctx, host.id, ref)
        ok = await _verified(ctx, host.id, ":dump")
    if not ok:
        await _discard(ctx, host.id, ":dump")
        ctx.deps.backups.mark_bad(ref, f"database.recover ({ctx.run_id}): restored corrupt")
        return _skip(f"dump {ref.backup_id} restored, but the new host found it corrupt")
    return done(
        f"{host.id} in {host.zone} restored dump {ref.backup_id} ({ref.location}), approved "
        f"by {by}; data lost: the dump's age, {age:.0f} s",
        primary=host.id,
        launched=[host.id],
        dump=ref.backup_id,
        data_loss_s=age,
    )


async def _chosen_dump(ctx: RunContext) -> JSON | None:
    """The newest verified dump, chosen once and journaled with its age at that time."""
    chosen = await ctx.recorded("dump")
    if chosen is not None:
        return chosen
    dumps = ctx.deps.backups.dumps(ctx.plan.group)
    if not dumps:
        return None
    ref = dumps[0]
    age = max(0.0, ctx.deps.clock.now() - ref.created_at)
    return await ctx.memo("dump", {"ref": _ref_json(ref), "age_s": age})


async def _approval(ctx: RunContext, ref: BackupRef, age: float) -> str:
    """Who approved restoring `ref`; waits (up to approval_timeout) and journals it."""
    memo = await ctx.recorded("approval")
    if memo is not None:
        return str(memo["by"])
    approvals, incident = ctx.deps.approvals, ctx.plan.incident_id
    approvals.request(
        incident,
        f"{DUMP_APPROVAL}: restore dump {ref.backup_id} of {ref.data_class} onto a new host "
        f"(data lost: {age:.0f} s)",
        ctx.deps.clock.now(),
    )

    async def probe() -> str | None:
        return approvals.approved(incident, DUMP_APPROVAL)

    by = await ctx.wait_for(
        f"an operator to approve {DUMP_APPROVAL} (drwatch approve {incident})",
        probe,
        ctx.deps.settings.approval_timeout,
    )
    await ctx.memo("approval", {"by": by})
    return by


async def _stream_dump(ctx: RunContext, instance_id: str, ref: BackupRef) -> None:
    """The dump's plaintext into the new host, once: its agent says whether a restore of
    this dump finished (so a resumed run does not restore twice)."""
    host = await require_instance(ctx, instance_id)
    snap = await ctx.deps.fleet.refresh()
    inst = snap.fleet.get(host.id)
    if inst is None:
        raise StepError(f"{instance_id} is not in the fleet")

    async def check(p: JSON) -> JSON | None:
        return await ctx.deps.dump_restore.restored(inst, p["backup_id"])

    async def apply(p: JSON) -> JSON:
        # Closed on every way out: gpg stops and the key's throwaway home goes at once.
        try:
            async with (
                contextlib.aclosing(ctx.deps.backups.plaintext(ref)) as stream,
                asyncio.timeout(ctx.deps.settings.restore_timeout),
            ):
                return await ctx.deps.dump_restore.restore(inst, p["backup_id"], stream)
        except TimeoutError:
            raise StepError(
                f"restoring {p['backup_id']} into {instance_id} took longer than "
                f"{ctx.deps.settings.restore_timeout:g}s"
            ) from None
        except DrwatchError as err:
            raise StepError(f"restoring {p['backup_id']} into {instance_id}: {err}") from None

    params = {"instance_id": instance_id, "backup_id": ref.backup_id}
    await ctx.effect(f"restore:{ref.backup_id}", params, check=check, apply=apply)


async def repoint_app_servers(ctx: RunContext) -> Outcome:
    found = _primary(ctx)
    if found is None:
        why = "; ".join(
            f"{rung}: {ctx.results[rung]['why']}"
            for rung in RUNGS[-2:]
            if ctx.results.get(rung, {}).get("why")
        )
        raise StepError(
            "no rung of the ladder recovered the database" + (f" ({why})" if why else "")
        )
    primary_id = found[1]
    await tag_primary(ctx, primary_id)
    snap = await ctx.deps.fleet.refresh()
    primary = snap.fleet.get(primary_id)
    address = primary.name if primary else primary_id
    notes: list[str] = []
    problems: list[str] = []
    for app in snap.fleet.in_region(ctx.plan.region):
        if (
            app.role is not Role.APP_SERVER
            or app.state.is_gone
            or not is_up(snap, app.id, Layer.AGENT)
        ):
            continue
        err = await try_agent_action(
            ctx, f"set_database:{app.id}", app, "set_database", {"address": address}
        )
        (problems if err else notes).append(err or app.name)
    failed = "".join(f"; failed {p}" for p in problems)
    return done(f"primary is {address} ({primary_id}); repointed {len(notes)} app servers{failed}")


PLAYBOOK = Playbook(
    PlaybookName.DB_RECOVER,
    (
        Step("inspect", inspect),
        Step("fence_old_primary", fence_old_primary),
        Step("relaunch_same_zone", relaunch_same_zone),
        Step("restore_volume_elsewhere", restore_volume_elsewhere),
        Step("promote_replica", promote_replica),
        Step("restore_latest_snapshot", restore_latest_snapshot),
        Step("restore_older_snapshot", restore_older_snapshot),
        Step("restore_from_dump", restore_from_dump),
        Step("repoint_app_servers", repoint_app_servers),
    ),
)
