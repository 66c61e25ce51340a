"""Load-balancer playbooks: move the Elastic IP to a healthy LB, and rebuild what was lost.

`load_balancer.failover_eip`:
  1. `check_standby`: a running standby LB of the group, in an allowed healthy zone, with
     agent and app up (the step fails, touching nothing, when there is none);
  2. `move_eip`: associate the group's Elastic IP with it (AllowReassociation);
  3. `verify_service`: the service address answers through it;
  4. `build_standby`: a new LB from the image in another healthy zone, with the app
     servers as backends, up and healthy;
  5. `stop_old`: the failed LB is stopped (fenced).

`load_balancer.replace`:
  1. `launch_replacement`; 2. `wait_healthy`; 3. `move_eip` (when the failed LB held it);
  4. `verify_service`; 5. `stop_old`.

A group without an Elastic IP (a standby region's LB, reached through the public name's
DNS record) has nothing to move: `move_eip` is skipped saying so, and `verify_service`
is skipped when the group has no `service_url` (the new LB's own health was checked).
"""

from __future__ import annotations

from drwatch.act.base import (
    JSON,
    GroupInfo,
    Outcome,
    Playbook,
    RunContext,
    Step,
    StepError,
    done,
    is_up,
    skipped,
)
from drwatch.act.playbooks.common import (
    app_address,
    cloud_instance,
    copied_tags,
    group_info,
    healthy_zones,
    image_for,
    launch,
    spread_of,
    stop_replaced,
    user_data,
    wait_healthy,
    zone_order,
)
from drwatch.model.fleet import Role
from drwatch.model.observation import Layer
from drwatch.model.plan import PlaybookName
from drwatch.model.snapshot import Snapshot
from drwatch.providers.base import AddressInfo


def _group(ctx: RunContext) -> GroupInfo:
    return group_info(ctx, Role.LOAD_BALANCER)


def _no_eip(ctx: RunContext) -> Outcome | None:
    """The skip for a group that carries no Elastic IP; None when it has one."""
    if _group(ctx).elastic_ip is not None:
        return None
    return skipped(
        f"group {ctx.plan.group} has no Elastic IP (no elastic_ip configured): it is "
        "reached another way, e.g. through the public name's DNS record; nothing to move"
    )


async def _eip(ctx: RunContext) -> AddressInfo:
    wanted = _group(ctx).elastic_ip
    if wanted is None:
        raise StepError(f"group {ctx.plan.group} has no elastic_ip configured")
    for addr in await ctx.deps.provider.addresses(ctx.plan.region):
        if addr.allocation_id == wanted or dict(addr.tags).get("Name") == wanted:
            return addr
    raise StepError(f"Elastic IP {wanted} not found in {ctx.plan.region}")


def _backends(ctx: RunContext, snap: Snapshot) -> str:
    """The app servers of the region whose app answers, as the LB's backend list."""
    ports = {g.name: g.app_port for g in ctx.deps.groups.values()}
    addrs = [
        app_address(i, ports.get(i.group))
        for i in snap.fleet.in_region(ctx.plan.region)
        if i.role is Role.APP_SERVER and is_up(snap, i.id, Layer.APP)
    ]
    return ",".join(sorted(a for a in addrs if a))


async def check_standby(ctx: RunContext) -> Outcome:
    snap = await ctx.deps.fleet.refresh()
    healthy = set(await healthy_zones(ctx))
    candidates = sorted(
        (
            i
            for i in snap.fleet.in_group(ctx.plan.group)
            if i.id not in ctx.plan.targets
            and not i.state.is_gone
            and i.zone in healthy
            and is_up(snap, i.id, Layer.AGENT)
            and is_up(snap, i.id, Layer.APP)
        ),
        key=lambda i: i.name,
    )
    if not candidates:
        raise StepError(f"no healthy standby load balancer in group {ctx.plan.group}")
    standby = candidates[0]
    return done(f"standby {standby.name} in {standby.zone} is healthy", target=standby.id)


async def _move_eip_to(ctx: RunContext, target: str) -> Outcome:
    eip = await _eip(ctx)
    previous = eip.instance_id

    async def check(p: JSON) -> JSON | None:
        now = await _eip(ctx)
        return {"already": True} if now.instance_id == p["instance_id"] else None

    async def apply(p: JSON) -> JSON:
        await ctx.deps.provider.associate_address(
            ctx.plan.region, p["allocation_id"], p["instance_id"]
        )
        return {"from": previous}

    params = {"allocation_id": eip.allocation_id, "instance_id": target}
    result = await ctx.effect("associate", params, check=check, apply=apply)
    if (await _eip(ctx)).instance_id != target:
        raise StepError(f"{eip.public_ip} is not on {target} after the move")
    if result.get("already"):
        return done(f"{eip.public_ip} already on {target}", target=target)
    return done(f"{eip.public_ip} moved from {result.get('from')} to {target}", target=target)


async def move_eip_to_standby(ctx: RunContext) -> Outcome:
    if (skip := _no_eip(ctx)) is not None:
        return skip
    return await _move_eip_to(ctx, ctx.results["check_standby"]["target"])


async def move_eip_to_replacement(ctx: RunContext) -> Outcome:
    if (skip := _no_eip(ctx)) is not None:
        return skip
    eip = await _eip(ctx)
    holder = await cloud_instance(ctx, eip.instance_id) if eip.instance_id else None
    new_id: str = ctx.results["launch_replacement"]["target"]
    if holder is not None and holder.id not in ctx.plan.targets and holder.id != new_id:
        snap = await ctx.deps.fleet.refresh()
        if is_up(snap, holder.id, Layer.APP):
            return skipped(f"{eip.public_ip} stays on {holder.id}, which is healthy")
    return await _move_eip_to(ctx, new_id)


async def verify_service(ctx: RunContext) -> Outcome:
    group = _group(ctx)
    if not group.service_checked:
        return skipped(
            f"group {group.name} has no service_url: its service is not checked "
            "(the load balancer's own health was)"
        )

    async def probe() -> bool | None:
        snap = await ctx.deps.fleet.refresh()
        return True if is_up(snap, ctx.plan.group, Layer.SERVICE) else None

    await ctx.wait_for(
        f"the service of {ctx.plan.group} to answer", probe, ctx.deps.settings.service_timeout
    )
    return done(f"the service of {ctx.plan.group} answers at its service URL")


async def _launch_lb(ctx: RunContext, *, exclude_zone: str | None) -> Outcome:
    snap = await ctx.deps.fleet.refresh()
    old = await cloud_instance(ctx, ctx.plan.targets[0]) if ctx.plan.targets else None
    known = old or (snap.fleet.get(ctx.plan.targets[0]) if ctx.plan.targets else None)
    healthy = [z for z in await healthy_zones(ctx) if z != exclude_zone]
    params = {
        "zones": zone_order(
            known.zone if known else ctx.plan.zone, healthy, spread_of(snap, ctx.plan.group)
        ),
        "image_id": await image_for(ctx, old, Role.LOAD_BALANCER),
        "user_data": user_data({"DRWATCH_BACKENDS": _backends(ctx, snap)}),
        "tags": copied_tags(known, ctx.plan.group, Role.LOAD_BALANCER),
    }
    result = await launch(ctx, "launch", params)
    new_id = result["instance_id"]
    await wait_healthy(ctx, new_id, app=True)
    refused = "".join(f" ({z} refused: {r})" for z, r in result["refused"].items())
    return done(
        f"{new_id} in {result['zone']} is up and healthy{refused}", target=new_id, launched=[new_id]
    )


async def build_standby(ctx: RunContext) -> Outcome:
    active = await cloud_instance(ctx, ctx.results["check_standby"]["target"])
    return await _launch_lb(ctx, exclude_zone=active.zone if active else None)


async def launch_replacement(ctx: RunContext) -> Outcome:
    return await _launch_lb(ctx, exclude_zone=None)


FAILOVER_EIP = Playbook(
    PlaybookName.LB_FAILOVER_EIP,
    (
        Step("check_standby", check_standby),
        Step("move_eip", move_eip_to_standby),
        Step("verify_service", verify_service),
        Step("build_standby", build_standby),
        Step("stop_old", stop_replaced),
    ),
)

REPLACE = Playbook(
    PlaybookName.LB_REPLACE,
    (
        Step("launch_replacement", launch_replacement),
        Step("move_eip", move_eip_to_replacement),
        Step("verify_service", verify_service),
        Step("stop_old", stop_replaced),
    ),
)
