"""Building blocks the playbooks share: find, launch, wait, stop, attach, agent calls.

Each helper that makes a side effect does it through `ctx.effect` with a world-side
"already done?" check, so a step that calls it can be re-run after a crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence

from drwatch.act.base import (
    COPIED_TAGS,
    GROUP_TAG,
    JSON,
    ROLE_TAG,
    RUN_TAG,
    STEP_TAG,
    GroupInfo,
    Outcome,
    RunContext,
    StepError,
    database_role,
    done,
    is_up,
    skipped,
)
from drwatch.errors import ProviderError
from drwatch.model.fleet import DB_ROLE_TAG, Instance, InstanceState, Role
from drwatch.model.observation import Layer
from drwatch.model.snapshot import Snapshot
from drwatch.providers.base import CloudInstance, LaunchSpec, VolumeInfo

APP_ADDR_TAG = "drwatch:app-addr"
# Launch errors that mean "not here, try another zone".
ZONE_REFUSALS = frozenset({"InsufficientInstanceCapacity", "Unsupported", "InsufficientCapacity"})
_ROOT_DEVICES = frozenset({"/dev/sda1", "/dev/xvda", "/dev/sda", "/dev/nvme0n1"})


# -- reading the world ----------------------------------------------------------------------


def group_info(ctx: RunContext, role: Role) -> GroupInfo:
    """The plan's group as configured; a group the config does not name gets defaults."""
    return ctx.deps.groups.get(ctx.plan.group) or GroupInfo(ctx.plan.group, role)


async def cloud_instance(ctx: RunContext, instance_id: str) -> CloudInstance | None:
    instances = await ctx.deps.provider.instances(ctx.plan.region)
    return next((i for i in instances if i.id == instance_id), None)


async def tag_primary(ctx: RunContext, instance_id: str) -> None:
    """Tag the new primary database (`drwatch:db-role = primary`), once."""

    async def check(p: JSON) -> JSON | None:
        inst = await cloud_instance(ctx, p["instance_id"])
        return {"already": True} if inst and inst.tag(DB_ROLE_TAG) == "primary" else None

    async def apply(p: JSON) -> JSON:
        await ctx.deps.provider.tag(ctx.plan.region, p["instance_id"], ((DB_ROLE_TAG, "primary"),))
        return {}

    await ctx.effect("tag_primary", {"instance_id": instance_id}, check=check, apply=apply)


async def require_instance(ctx: RunContext, instance_id: str) -> CloudInstance:
    inst = await cloud_instance(ctx, instance_id)
    if inst is None:
        raise StepError(f"{instance_id} is not known to the provider in {ctx.plan.region}")
    return inst


async def made_by(ctx: RunContext, key: str) -> CloudInstance | None:
    """The live instance this run's step launched under `key`, if it exists."""
    step_tag = f"{ctx.step}/{key}"
    for inst in await ctx.deps.provider.instances(ctx.plan.region):
        if (
            inst.tag(RUN_TAG) == ctx.run_id
            and inst.tag(STEP_TAG) == step_tag
            and inst.state is not InstanceState.TERMINATED
        ):
            return inst
    return None


async def healthy_zones(ctx: RunContext) -> list[str]:
    """Zones of the plan's region that the provider calls available and the plan allows."""
    zones = await ctx.deps.provider.zones(ctx.plan.region)
    avoid = set(ctx.plan.avoid_zones)
    return sorted(z.name for z in zones if z.state == "available" and z.name not in avoid)


def zone_order(
    preferred: str | None, healthy: Sequence[str], spread: Mapping[str, int]
) -> list[str]:
    """Zones to try: the preferred one first when healthy, then the least crowded."""
    rest = sorted((z for z in healthy if z != preferred), key=lambda z: (spread.get(z, 0), z))
    return [preferred, *rest] if preferred is not None and preferred in healthy else rest


def group_members(snap: Snapshot, group: str) -> list[Instance]:
    return [i for i in snap.fleet.in_group(group) if not i.state.is_gone]


def spread_of(snap: Snapshot, group: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for inst in group_members(snap, group):
        counts[inst.zone] = counts.get(inst.zone, 0) + 1
    return counts


async def image_for(ctx: RunContext, old: CloudInstance | None, role: Role) -> str:
    """The old instance's image when the provider still has it, else the role's image."""
    images = await ctx.deps.provider.images(ctx.plan.region)
    known = {i.id for i in images}
    if old is not None and old.image_id in known:
        return old.image_id
    for img in images:
        tags = dict(img.tags)
        if tags.get(GROUP_TAG) == ctx.plan.group or tags.get(ROLE_TAG) == role.value:
            return img.id
    raise StepError(f"no image for group {ctx.plan.group} ({role.value}) in {ctx.plan.region}")


def copied_tags(old: CloudInstance | Instance | None, group: str, role: Role) -> dict[str, str]:
    """The group's tags from the old instance; never its agent/app addresses (those are
    the old host's, and the new host announces its own)."""
    tags = dict(old.tags) if old is not None else {}
    kept = {k: v for k, v in tags.items() if k in COPIED_TAGS}
    kept.setdefault(GROUP_TAG, group)
    kept.setdefault(ROLE_TAG, role.value)
    return kept


def user_data(values: Mapping[str, str]) -> str:
    """`KEY=value` lines: the instance's configuration at boot."""
    return "".join(f"{k}={v}\n" for k, v in values.items() if v)


def load_balancers(snap: Snapshot, region: str) -> list[Instance]:
    """Running load balancers of the region whose agent answers."""
    return [
        i
        for i in snap.fleet.in_region(region)
        if i.role is Role.LOAD_BALANCER and not i.state.is_gone and is_up(snap, i.id, Layer.AGENT)
    ]


def database_primary(snap: Snapshot, region: str) -> Instance | None:
    """The region's database primary: the live one whose agent says so (the newest, and
    one tagged so by a recovery first, if two say so); else, with no agent saying, the
    newest tagged primary."""
    dbs = [i for i in snap.fleet.in_region(region) if i.role is Role.DATABASE]
    live = [i for i in dbs if not i.state.is_gone]
    reporting = [i for i in live if database_role(snap, i.id) == "primary"]
    tagged = [i for i in live if i.tag(DB_ROLE_TAG) == "primary"]
    candidates = reporting or tagged
    if not candidates:
        return None
    return max(candidates, key=lambda i: (i.tag(DB_ROLE_TAG) == "primary", i.launched_at or 0.0))


def app_address(inst: Instance | CloudInstance, port: int | None) -> str | None:
    addr = inst.tag(APP_ADDR_TAG)
    if addr:
        return addr
    if inst.private_ip and port:
        return f"{inst.private_ip}:{port}"
    return None


# -- side effects ---------------------------------------------------------------------------


async def launch(ctx: RunContext, key: str, params: JSON) -> JSON:
    """Launch one instance, trying `params["zones"]` in order; idempotent per run/step/key.

    One client token serves every zone: it names the logical launch, not the attempt,
    so a retry in any zone after a crash gets back the instance an earlier attempt made
    (EC2 returns it even when describe does not show it yet) instead of a second one.
    Each attempt is journaled (`<key>#try<n>`: zone and token) before it is made.

    Returns `{"instance_id", "zone", "refused": {zone: reason}}`. Raises StepError with
    every zone's refusal when none accepts.
    """
    token = ctx.token(key)

    async def check(p: JSON) -> JSON | None:
        inst = await made_by(ctx, key)
        return {"instance_id": inst.id, "zone": inst.zone, "refused": {}} if inst else None

    async def apply(p: JSON) -> JSON:
        refused: dict[str, str] = {}
        for n, zone in enumerate(p["zones"]):
            await ctx.memo(f"{key}#try{n}", {"zone": zone, "client_token": token})
            spec = LaunchSpec(
                region=ctx.plan.region,
                zone=zone,
                image_id=p["image_id"],
                client_token=token,
                instance_type=ctx.deps.settings.instance_type,
                user_data=p["user_data"],
                tags=(*sorted(p["tags"].items()), *ctx.tags(key)),
            )
            try:
                new_id = await ctx.deps.provider.run_instance(spec)
            except ProviderError as err:
                if err.code not in ZONE_REFUSALS:
                    raise
                refused[zone] = f"{err.code}: {err}"
                continue
            where = await _zone_of(ctx, new_id, zone)
            return {"instance_id": new_id, "zone": where, "refused": refused}
        raise StepError(f"no zone accepted the launch: {_refusals(refused, p['zones'])}")

    return await ctx.effect(key, params, check=check, apply=apply)


async def _zone_of(ctx: RunContext, instance_id: str, asked: str) -> str:
    """Where the instance is: a retried token returns an earlier attempt's instance, which
    may sit in another zone than this attempt asked for. While describe lags behind the
    launch, the zone asked for stands (callers that need certainty use wait_running)."""
    inst = await cloud_instance(ctx, instance_id)
    return inst.zone if inst is not None else asked


async def create_once(
    ctx: RunContext,
    key: str,
    params: JSON,
    *,
    find: Callable[[JSON], Awaitable[JSON | None]],
    create: Callable[[JSON], Awaitable[JSON]],
) -> JSON:
    """A create call the provider cannot make idempotent (CreateSnapshot, CopySnapshot take
    no client token): tag and journal. `find` looks for the resource by this run's tags.

    Before the call, `<key>#sent` is journaled. A resumed attempt that finds it, but not
    the resource, may be looking at a describe that lags: it keeps looking for up to
    `settings.describe_lag` before it creates again."""

    async def apply(p: JSON) -> JSON:
        if await ctx.recorded(f"{key}#sent") is not None:
            found = await _settled(ctx, key, lambda: find(p))
            if found is not None:
                return found
        await ctx.memo(f"{key}#sent", {"key": key})
        return await create(p)

    return await ctx.effect(key, params, check=find, apply=apply)


async def copy_image_once(
    ctx: RunContext, key: str, region: str, *, source_region: str, image_id: str, name: str
) -> str:
    """Copy an image into `region` once: found by its name there, made with a client token
    (so a retry whose describe lags gets the same copy back)."""

    async def check(p: JSON) -> JSON | None:
        images = await ctx.deps.provider.images(p["region"])
        found = next((i.id for i in images if i.name == p["name"]), None)
        return {"image_id": found} if found else None

    async def apply(p: JSON) -> JSON:
        new_id = await ctx.deps.provider.copy_image(
            p["region"], p["source_region"], p["image_id"], p["name"], ctx.token(key)
        )
        return {"image_id": new_id}

    params = {"region": region, "source_region": source_region, "image_id": image_id}
    result = await ctx.effect(key, {**params, "name": name}, check=check, apply=apply)
    copied: str = result["image_id"]
    return copied


async def copy_snapshot_once(
    ctx: RunContext, key: str, region: str, *, source_region: str, snapshot_id: str
) -> str:
    """Copy a snapshot into `region` once. CopySnapshot takes no client token: the copy
    is tagged with this run's step and journaled (`create_once`)."""

    async def find(p: JSON) -> JSON | None:
        wanted = dict(ctx.tags(key))
        for snap in await ctx.deps.provider.snapshots(p["region"]):
            if all(dict(snap.tags).get(k) == v for k, v in wanted.items()):
                return {"snapshot_id": snap.id}
        return None

    async def create(p: JSON) -> JSON:
        new_id = await ctx.deps.provider.copy_snapshot(
            p["region"], p["source_region"], p["snapshot_id"], ctx.tags(key)
        )
        return {"snapshot_id": new_id}

    params = {"region": region, "source_region": source_region, "snapshot_id": snapshot_id}
    result = await create_once(ctx, key, params, find=find, create=create)
    copied: str = result["snapshot_id"]
    return copied


async def _settled(
    ctx: RunContext, key: str, find: Callable[[], Awaitable[JSON | None]]
) -> JSON | None:
    """What `find` sees within the describe lag, or None when it never shows."""
    try:
        return await ctx.wait_for(
            f"{key} from an earlier attempt to show", find, ctx.deps.settings.describe_lag
        )
    except StepError:
        return None


def _refusals(refused: Mapping[str, str], zones: Sequence[str]) -> str:
    if not zones:
        return "no healthy zone to launch in"
    return "; ".join(f"{z}: {r}" for z, r in refused.items())


async def wait_running(ctx: RunContext, instance_id: str) -> CloudInstance:
    async def probe() -> CloudInstance | None:
        inst = await cloud_instance(ctx, instance_id)
        if inst is not None and inst.state is InstanceState.TERMINATED:
            raise StepError(f"{instance_id} terminated while we waited for it to run")
        return inst if inst is not None and inst.state is InstanceState.RUNNING else None

    return await ctx.wait_for(f"{instance_id} to run", probe, ctx.deps.settings.launch_timeout)


async def wait_healthy(ctx: RunContext, instance_id: str, *, app: bool = True) -> Snapshot:
    """Until the instance is in the fleet with its agent (and app) up."""

    async def probe() -> Snapshot | None:
        snap = await ctx.deps.fleet.refresh()
        if snap.fleet.get(instance_id) is None or not is_up(snap, instance_id, Layer.AGENT):
            return None
        return snap if not app or is_up(snap, instance_id, Layer.APP) else None

    what = f"{instance_id} to join the fleet with agent{' and app' if app else ''} up"
    return await ctx.wait_for(what, probe, ctx.deps.settings.healthy_timeout)


async def stop(ctx: RunContext, key: str, instance_id: str) -> JSON:
    """Stop an instance through the provider (a fence), then wait until it is stopped."""

    async def check(p: JSON) -> JSON | None:
        inst = await cloud_instance(ctx, p["instance_id"])
        if inst is None or inst.state in (InstanceState.STOPPED, InstanceState.TERMINATED):
            return {"instance_id": p["instance_id"], "already": True}
        return None

    async def apply(p: JSON) -> JSON:
        await ctx.deps.provider.stop_instance(ctx.plan.region, p["instance_id"])
        return {"instance_id": p["instance_id"]}

    result = await ctx.effect(key, {"instance_id": instance_id}, check=check, apply=apply)

    async def stopped() -> bool | None:
        inst = await cloud_instance(ctx, instance_id)
        gone = inst is None or inst.state in (InstanceState.STOPPED, InstanceState.TERMINATED)
        return True if gone else None

    await ctx.wait_for(f"{instance_id} to stop", stopped, ctx.deps.settings.stop_timeout)
    return result


async def stop_replaced(ctx: RunContext) -> Outcome:
    """Stop every target that a replacement now serves for. The service is already back:
    a target that cannot be stopped (its zone is out) is reported, not fatal."""
    notes, failed = [], []
    for target in ctx.plan.targets:
        try:
            result = await stop(ctx, f"stop:{target}", target)
        except (ProviderError, StepError) as err:
            failed.append(f"could not stop {target}: {err}")
            continue
        notes.append(f"{target} {'was already stopped' if result.get('already') else 'stopped'}")
    if not notes:
        return skipped("; ".join(failed))
    return done("; ".join(notes + failed))


async def volume(ctx: RunContext, volume_id: str) -> VolumeInfo | None:
    volumes = await ctx.deps.provider.volumes(ctx.plan.region)
    return next((v for v in volumes if v.id == volume_id), None)


async def wait_volume(ctx: RunContext, volume_id: str, state: str) -> VolumeInfo:
    async def probe() -> VolumeInfo | None:
        vol = await volume(ctx, volume_id)
        if vol is not None and vol.state == "error":
            raise StepError(f"volume {volume_id} is in state error")
        return vol if vol is not None and vol.state == state else None

    return await ctx.wait_for(
        f"volume {volume_id} to be {state}", probe, ctx.deps.settings.volume_timeout
    )


async def detach(ctx: RunContext, key: str, volume_id: str, instance_id: str) -> None:
    async def check(p: JSON) -> JSON | None:
        vol = await volume(ctx, p["volume_id"])
        return {"already": True} if vol is None or vol.attached_to != p["instance_id"] else None

    async def apply(p: JSON) -> JSON:
        await ctx.deps.provider.detach_volume(ctx.plan.region, p["volume_id"], p["instance_id"])
        return {}

    params = {"volume_id": volume_id, "instance_id": instance_id}
    await ctx.effect(key, params, check=check, apply=apply)
    await wait_volume(ctx, volume_id, "available")


async def attach(ctx: RunContext, key: str, volume_id: str, instance_id: str) -> None:
    """Attach, refusing what AWS refuses and moto accepts: a volume in use or in another zone."""

    async def check(p: JSON) -> JSON | None:
        vol = await volume(ctx, p["volume_id"])
        return (
            {"already": True} if vol is not None and vol.attached_to == p["instance_id"] else None
        )

    async def apply(p: JSON) -> JSON:
        vol = await volume(ctx, p["volume_id"])
        inst = await require_instance(ctx, p["instance_id"])
        if vol is None:
            raise StepError(f"volume {p['volume_id']} does not exist")
        if vol.state != "available" or vol.attached_to is not None:
            raise StepError(f"volume {vol.id} is {vol.state} (attached to {vol.attached_to})")
        if vol.zone != inst.zone:
            raise StepError(f"volume {vol.id} is in {vol.zone}, instance {inst.id} in {inst.zone}")
        device = ctx.deps.settings.data_device
        await ctx.deps.provider.attach_volume(ctx.plan.region, vol.id, inst.id, device)
        return {"device": device}

    params = {"volume_id": volume_id, "instance_id": instance_id}
    await ctx.effect(key, params, check=check, apply=apply)
    await wait_volume(ctx, volume_id, "in-use")


async def agent_action(
    ctx: RunContext, key: str, instance: Instance, name: str, params: Mapping[str, str]
) -> JSON:
    """An allow-listed agent action under a deadline. Agents make actions idempotent, so the
    world-side check is the action itself being harmless to repeat."""

    async def check(_p: JSON) -> JSON | None:
        return None

    async def apply(p: JSON) -> JSON:
        try:
            async with asyncio.timeout(ctx.deps.settings.action_timeout):
                result = await ctx.deps.agent.action(instance, name, p["params"])
        except TimeoutError:
            raise StepError(f"agent action {name} on {instance.name} timed out") from None
        return {"result": result}

    payload = {"instance_id": instance.id, "action": name, "params": dict(params)}
    return await ctx.effect(key, payload, check=check, apply=apply)


async def try_agent_action(
    ctx: RunContext, key: str, instance: Instance, name: str, params: Mapping[str, str]
) -> str | None:
    """Like `agent_action`, but a refusal is returned as text instead of failing the step."""
    try:
        await agent_action(ctx, key, instance, name, params)
    except Exception as err:  # an unreachable agent is reported, not fatal, for optional calls
        return f"{instance.name}: {err}"
    return None
