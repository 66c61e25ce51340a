"""`app_server.replace`: a new app server for each target, then the old one out.

Steps (each re-runnable after a crash; side effects at most once):

1. `launch_replacement`: from the group's image, in the old zone, or a healthy zone
   when the plan avoids it or it refuses launches; UserData says where the database is.
2. `wait_healthy`: the new instance is in the fleet with agent and app up.
3. `register_backend`: every load balancer of the region gets the new backend.
4. `deregister_old`: the old backend is removed from every load balancer.
5. `stop_old`: the old instance is stopped through the provider.
"""

from __future__ import annotations

from drwatch.act.base import (
    GroupInfo,
    Outcome,
    Playbook,
    RunContext,
    Step,
    StepError,
    done,
    skipped,
)
from drwatch.act.playbooks.common import (
    app_address,
    cloud_instance,
    copied_tags,
    database_primary,
    group_info,
    healthy_zones,
    image_for,
    launch,
    load_balancers,
    spread_of,
    stop_replaced,
    try_agent_action,
    user_data,
    wait_healthy,
    zone_order,
)
from drwatch.model.fleet import Role
from drwatch.model.plan import PlaybookName


def _group(ctx: RunContext) -> GroupInfo:
    return group_info(ctx, Role.APP_SERVER)


def _replacements(ctx: RunContext) -> dict[str, str]:
    found: dict[str, str] = ctx.results["launch_replacement"]["replacements"]
    return found


async def launch_replacement(ctx: RunContext) -> Outcome:
    snap = await ctx.deps.fleet.refresh()
    healthy = await healthy_zones(ctx)
    spread = spread_of(snap, ctx.plan.group)
    primary = database_primary(snap, ctx.plan.region)
    replacements: dict[str, str] = {}
    notes = []
    for target in ctx.plan.targets:
        old = await cloud_instance(ctx, target)
        known = old or snap.fleet.get(target)
        params = {
            "zones": zone_order(known.zone if known else ctx.plan.zone, healthy, spread),
            "image_id": await image_for(ctx, old, Role.APP_SERVER),
            "user_data": user_data({"DRWATCH_DB": primary.name if primary else ""}),
            "tags": copied_tags(known, ctx.plan.group, Role.APP_SERVER),
        }
        result = await launch(ctx, f"launch:{target}", params)
        replacements[target] = result["instance_id"]
        spread[result["zone"]] = spread.get(result["zone"], 0) + 1
        refused = "".join(f" ({z} refused: {r})" for z, r in result["refused"].items())
        notes.append(f"{target} -> {result['instance_id']} in {result['zone']}{refused}")
    return done("; ".join(notes), replacements=replacements, launched=list(replacements.values()))


async def wait_replacements_healthy(ctx: RunContext) -> Outcome:
    for new_id in _replacements(ctx).values():
        await wait_healthy(ctx, new_id, app=True)
    return done("agent and app up on " + ", ".join(_replacements(ctx).values()))


async def register_backend(ctx: RunContext) -> Outcome:
    snap = await ctx.deps.fleet.refresh()
    lbs = load_balancers(snap, ctx.plan.region)
    if not lbs:
        return skipped(f"no load balancer with a live agent in {ctx.plan.region}")
    notes: list[str] = []
    problems: list[str] = []
    for new_id in _replacements(ctx).values():
        inst = snap.fleet.get(new_id)
        addr = app_address(inst, _group(ctx).app_port) if inst else None
        if inst is None or addr is None:
            raise StepError(f"{new_id} has no app address to register")
        for lb in lbs:
            err = await try_agent_action(
                ctx, f"register:{new_id}@{lb.id}", lb, "register_backend", {"address": addr}
            )
            (problems if err else notes).append(err or f"{addr} on {lb.name}")
    if not notes:
        raise StepError("no load balancer accepted the new backend: " + "; ".join(problems))
    return done("registered " + ", ".join(notes) + "".join(f"; failed {p}" for p in problems))


async def deregister_old(ctx: RunContext) -> Outcome:
    snap = await ctx.deps.fleet.refresh()
    lbs = load_balancers(snap, ctx.plan.region)
    notes: list[str] = []
    problems: list[str] = []
    for target in ctx.plan.targets:
        old = await cloud_instance(ctx, target) or snap.fleet.get(target)
        if old is None:
            continue
        # The old backend may be listed by address or (seeded) by name: remove both.
        names = {a for a in (app_address(old, _group(ctx).app_port), old.tag("Name")) if a}
        for lb in lbs:
            for n, address in enumerate(sorted(names)):
                err = await try_agent_action(
                    ctx,
                    f"deregister:{target}@{lb.id}#{n}",
                    lb,
                    "deregister_backend",
                    {"address": address},
                )
                (problems if err else notes).append(err or f"{address} from {lb.name}")
    if not notes and not problems:
        return skipped("nothing to deregister")
    return done("deregistered " + ", ".join(notes) + "".join(f"; failed {p}" for p in problems))


PLAYBOOK = Playbook(
    PlaybookName.APP_REPLACE,
    (
        Step("launch_replacement", launch_replacement),
        Step("wait_healthy", wait_replacements_healthy),
        Step("register_backend", register_backend),
        Step("deregister_old", deregister_old),
        Step("stop_old", stop_replaced),
    ),
)
