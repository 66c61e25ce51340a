"""`region.failover`: move the service to the standby region when the serving one is lost.

Steps (docs/playbooks.md):

1. `preconditions`: the lost region serves (DNS PRIMARY record or primary database); the
   standby region's API answers; its replica is reachable and its lag known (the
   expected data loss); an image for every role is there; no residency rule forbids the
   move; the public name's failover records are readable and of a kind drwatch switches.
   Every refusal is listed, and nothing has been changed.
2. `fence_lost_region`: stop the old primary through the lost region's API when it
   answers; otherwise say that nothing could be fenced.
3. `promote_replica`: promote the cross-region replica through its agent, once: a replica
   that already reports `primary` is not promoted again.
4. `scale_app_servers`: bring the standby region's app servers up to each lost group's
   size from the images there, told where the new primary is.
5. `ensure_load_balancer`: a healthy load balancer in the standby region (a new one when
   none answers) with every standby app server registered.
6. `switch_dns`: UPSERT the failover records (PRIMARY, and SECONDARY when it points
   elsewhere) to the standby load balancer's address in one change; wait for INSYNC;
   read them back. A resumed run finds the records switched and never flips them back.
7. `verify_service`: the service check through the public name answers after the switch.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from drwatch.act.base import (
    GROUP_TAG,
    JSON,
    ROLE_TAG,
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
    healthy_zones,
    launch,
    stop,
    tag_primary,
    try_agent_action,
    user_data,
    wait_running,
)
from drwatch.act.playbooks.region_checks import (
    app_groups,
    records_refusal,
    replica_lag,
    replica_to_promote,
    role_images,
    serving_refusals,
)
from drwatch.assess.regions import primary_databases
from drwatch.errors import ProviderError
from drwatch.model.fleet import Instance, Role
from drwatch.model.observation import Health, Layer
from drwatch.model.plan import PlaybookName
from drwatch.model.regions import DnsRecord, failover_pair, region_roles
from drwatch.model.snapshot import Snapshot
from drwatch.observe.regions import learn_addresses
from drwatch.roles import reported_role, role_of

FENCED_TAG = "drwatch:fenced"


def _facts(ctx: RunContext) -> JSON:
    return ctx.results["preconditions"]


def in_region(ctx: RunContext, region: str, group: str = "") -> RunContext:
    """The same run and step, acting in `region` (and `group`): the common helpers act in
    `ctx.plan.region`, and every effect still journals under this run."""
    plan = dataclasses.replace(
        ctx.plan, region=region, zone="", group=group or ctx.plan.group, avoid_zones=()
    )
    return RunContext(ctx.run_id, plan, ctx.deps, ctx.gate, ctx.results, ctx.step)


# -- 1. preconditions ---------------------------------------------------------------------


async def _records(ctx: RunContext) -> tuple[list[DnsRecord], str | None]:
    setup = ctx.deps.region
    if not (setup.hosted_zone and setup.public_name):
        return [], "no [dns] section in the config: the public name cannot be switched"
    try:
        found = await setup.dns.records(setup.hosted_zone, setup.public_name)
    except ProviderError as err:
        return [], f"the records of {setup.public_name} cannot be read: {err}"
    return found, records_refusal(found, setup.hosted_zone, setup.public_name)


async def _learn(ctx: RunContext, snap: Snapshot, regions: list[str]) -> None:
    """Addresses of the regions whose API answers (a lost one's are remembered)."""
    for region in regions:
        try:
            learn_addresses(
                ctx.deps.region.addresses, snap, await ctx.deps.provider.addresses(region)
            )
        except ProviderError:
            learn_addresses(ctx.deps.region.addresses, snap)


async def _images(ctx: RunContext, region: str) -> tuple[dict[str, str], list[str]]:
    try:
        images = await ctx.deps.provider.images(region)
    except ProviderError as err:
        return {}, [f"the images in {region} cannot be listed: {err}"]
    return role_images(images, region)


async def _api_answers(ctx: RunContext, region: str) -> str | None:
    try:
        await ctx.deps.provider.ping(region)
    except ProviderError as err:
        return f"the API of {region} does not answer: {err}"
    return None


async def _serving(ctx: RunContext, snap: Snapshot) -> tuple[str | None, list[str]]:
    """The standby region to move to, and the refusals about DNS and which region serves."""
    lost = ctx.plan.region
    records, dns_problem = await _records(ctx)
    regions = sorted({lost, *snap.fleet.regions})
    await _learn(ctx, snap, regions)
    primaries = primary_databases(snap, ctx.deps.roles.known())
    roles = region_roles(records, ctx.deps.region.addresses.regions, primaries, regions)
    standby, reasons = serving_refusals(roles, lost, regions)
    return standby, ([dns_problem] if dns_problem else []) + reasons


async def _standby_ready(
    ctx: RunContext, snap: Snapshot, standby: str
) -> tuple[Instance | None, dict[str, str], list[str]]:
    """The replica to promote and the images to launch from, and what is not ready."""
    reasons = [r for r in [await _api_answers(ctx, standby)] if r]
    replica, why = replica_to_promote(snap, standby)
    images, missing = await _images(ctx, standby)
    residency = ctx.deps.region.residency(ctx.plan.region, standby)
    return replica, images, [*reasons, *why, *missing, *([residency] if residency else [])]


async def preconditions(ctx: RunContext) -> Outcome:
    lost = ctx.plan.region
    snap = await ctx.deps.fleet.refresh()
    standby, reasons = await _serving(ctx, snap)
    if standby is None:
        raise StepError("refused: " + "; ".join(reasons))
    replica, images, more = await _standby_ready(ctx, snap, standby)
    if reasons or more or replica is None:
        raise StepError("refused: " + "; ".join([*reasons, *more]))
    lag = replica_lag(snap, replica.id) or 0.0
    known = ctx.deps.roles.known()
    old = {
        i.id: i.name
        for i in snap.fleet.in_region(lost)
        if i.role is Role.DATABASE and role_of(i, snap, known)[0] == "primary"
    }
    return done(
        f"{lost} serves and is lost; standby {standby} answers; replica {replica.name} "
        f"lag {lag:g}s (expected data loss about {lag:g}s); images for "
        f"{', '.join(sorted(images))} in {standby}",
        lost=lost,
        standby=standby,
        replica=replica.id,
        replica_name=replica.name,
        expected_loss_s=lag,
        images=images,
        app_groups=app_groups(ctx.deps.groups, snap, lost, standby),
        old_primaries=list(old),
        old_primary_names=old,
    )


# -- 2. fence -----------------------------------------------------------------------------


async def fence_lost_region(ctx: RunContext) -> Outcome:
    facts = _facts(ctx)
    lost, old = facts["lost"], facts["old_primaries"]
    if not old:
        return skipped(f"no primary database known in {lost}")
    if (why := await _api_answers(ctx, lost)) is not None:
        return skipped(
            f"{why}: nothing could be fenced; the old primary must not be started again "
            "as a primary (docs/playbooks.md, failback)"
        )
    here = in_region(ctx, lost)
    names = facts.get("old_primary_names", {})
    notes = []
    for instance_id in old:
        who = f"{names[instance_id]} ({instance_id})" if instance_id in names else instance_id
        try:
            result = await stop(here, f"fence:{instance_id}", instance_id)
        except (ProviderError, StepError) as err:
            notes.append(f"could not stop {who}: {err}")
            continue
        notes.append(f"{who} {'was already stopped' if result.get('already') else 'stopped'}")
    return done("; ".join(notes))


# -- 3. promote ---------------------------------------------------------------------------


async def promote_replica(ctx: RunContext) -> Outcome:
    facts = _facts(ctx)
    standby, replica_id = facts["standby"], facts["replica"]
    here = in_region(ctx, standby)

    async def reports_primary() -> bool | None:
        snap = await ctx.deps.fleet.refresh()
        return True if reported_role(snap, replica_id) == "primary" else None

    async def check(_p: JSON) -> JSON | None:
        return {"already": True} if await reports_primary() else None

    async def apply(p: JSON) -> JSON:
        snap = await ctx.deps.fleet.refresh()
        inst = snap.fleet.get(replica_id)
        if inst is None:
            raise StepError(f"{replica_id} left the fleet before it could be promoted")
        try:
            async with asyncio.timeout(ctx.deps.settings.action_timeout):
                await ctx.deps.agent.action(inst, "promote", {})
        except TimeoutError:
            raise StepError(f"promote on {inst.name} timed out") from None
        except Exception as err:  # the agent refused or is unreachable: the step fails
            raise StepError(f"promote failed on {inst.name}: {err}") from None
        return {"promoted": replica_id}

    result = await ctx.effect(
        f"promote:{replica_id}", {"instance_id": replica_id}, check=check, apply=apply
    )
    await ctx.wait_for(
        f"{facts['replica_name']} to report primary",
        reports_primary,
        ctx.deps.settings.action_timeout,
    )
    await tag_primary(here, replica_id)
    how = "was already the primary" if result.get("already") else "promoted"
    return done(
        f"{facts['replica_name']} ({replica_id}) {how} in {standby}; expected data loss "
        f"about {facts['expected_loss_s']:g}s of writes (its lag)",
        primary=replica_id,
    )


# -- 4. app servers -----------------------------------------------------------------------


def _live(snap: Snapshot, region: str, role: Role) -> list[Instance]:
    return [i for i in snap.fleet.in_region(region) if i.role is role and not i.state.is_gone]


async def scale_app_servers(ctx: RunContext) -> Outcome:
    facts = _facts(ctx)
    snap = await ctx.deps.fleet.refresh()
    zones = await healthy_zones(in_region(ctx, facts["standby"]))
    launched: list[str] = []
    notes: list[str] = []
    for lost_group, plan in sorted(facts["app_groups"].items()):
        ids, note = await _scale_group(ctx, snap, zones, lost_group, plan)
        launched += ids
        notes.append(note)
    for instance_id in launched:
        await wait_running(in_region(ctx, facts["standby"]), instance_id)
    await _wait_all_healthy(ctx, launched)
    return done("; ".join(notes) or "no app group to scale", launched=launched)


async def _scale_group(
    ctx: RunContext, snap: Snapshot, zones: list[str], lost_group: str, plan: JSON
) -> tuple[list[str], str]:
    """Tell the standby group's running app servers the new primary and launch the rest
    of its size: the ids launched, and the step's words for this group."""
    facts = _facts(ctx)
    standby, primary_name, group = facts["standby"], facts["replica_name"], plan["standby_group"]
    have = [i for i in _live(snap, standby, Role.APP_SERVER) if i.group == group]
    for inst in have:
        await try_agent_action(
            ctx, f"set_database:{inst.id}", inst, "set_database", {"address": primary_name}
        )
    here = in_region(ctx, standby, group)
    ids, names = [], []
    for n in range(len(have), plan["size"]):
        names.append(f"{group}-fo-{n + 1}")
        params = {
            "zones": _rotated(zones, n),
            "image_id": facts["images"][Role.APP_SERVER.value],
            "user_data": user_data({"DRWATCH_DB": primary_name}),
            "tags": {"Name": names[-1], GROUP_TAG: group, ROLE_TAG: "app_server"},
        }
        ids.append((await launch(here, f"launch:{lost_group}:{n}", params))["instance_id"])
    return ids, _scaled(group, [i.name for i in have], names)


def _scaled(group: str, running: list[str], launched: list[str]) -> str:
    """`app-eu: running app-eu-1 (told the new primary); launched app-eu-fo-2, app-eu-fo-3`."""
    told = f"running {', '.join(sorted(running))} (told the new primary)" if running else ""
    new = f"launched {', '.join(launched)}" if launched else ""
    return f"{group}: {'; '.join(p for p in (told, new) if p) or 'nothing to do'}"


def _rotated(zones: list[str], n: int) -> list[str]:
    """Zones to try for the n-th launch: spread over the healthy zones, the rest after."""
    k = n % len(zones) if zones else 0
    return zones[k:] + zones[:k]


async def _wait_all_healthy(ctx: RunContext, ids: list[str]) -> None:
    async def probe() -> bool | None:
        snap = await ctx.deps.fleet.refresh()
        up = all(
            snap.fleet.get(i) is not None
            and is_up(snap, i, Layer.AGENT)
            and is_up(snap, i, Layer.APP)
            for i in ids
        )
        return True if up else None

    if ids:
        await ctx.wait_for(
            f"{len(ids)} new app servers to answer", probe, ctx.deps.settings.healthy_timeout
        )


# -- 5. load balancer ---------------------------------------------------------------------


def _serving_lb(snap: Snapshot, region: str) -> Instance | None:
    lbs = [
        i
        for i in _live(snap, region, Role.LOAD_BALANCER)
        if is_up(snap, i.id, Layer.AGENT) and is_up(snap, i.id, Layer.APP)
    ]
    return min(lbs, key=lambda i: i.name) if lbs else None


async def ensure_load_balancer(ctx: RunContext) -> Outcome:
    facts = _facts(ctx)
    standby = facts["standby"]
    snap = await ctx.deps.fleet.refresh()
    apps = _live(snap, standby, Role.APP_SERVER)
    lb = _serving_lb(snap, standby) or await _existing_lb(ctx, snap, standby)
    note = ""
    if lb is None:
        lb, snap = await _launch_lb(ctx, standby, [a.name for a in apps])
        note = "launched "
    registered: list[str] = []
    problems: list[str] = []
    for app in apps:
        port = ctx.deps.groups[app.group].app_port if app.group in ctx.deps.groups else None
        addr = app_address(app, port)
        if addr is None:
            continue
        err = await try_agent_action(
            ctx, f"register:{app.id}@{lb.id}", lb, "register_backend", {"address": addr}
        )
        (problems if err else registered).append(err or app.name)
    if note:
        await _take_elastic_ip(ctx, standby, lb.id)
    inst = await cloud_instance(in_region(ctx, standby), lb.id)
    address = (inst.public_ip if inst else None) or lb.public_ip
    if not address:
        raise StepError(f"load balancer {lb.name} in {standby} has no public address for DNS")
    failed = "".join(f"; failed {p}" for p in problems)
    return done(
        f"{note}{lb.name} serves in {standby} at {address}; backends {', '.join(registered)}"
        + failed,
        lb=lb.id,
        address=address,
    )


async def _take_elastic_ip(ctx: RunContext, region: str, lb_id: str) -> None:
    """A new load balancer takes the Elastic IP a silent one of the region holds, so the
    address the SECONDARY record already names keeps working."""
    snap = ctx.deps.fleet.latest()
    lbs = {i.id for i in snap.fleet.in_region(region) if i.role is Role.LOAD_BALANCER}
    held = [a for a in await ctx.deps.provider.addresses(region) if a.instance_id in lbs]
    eip = next((a for a in held if a.instance_id != lb_id), None)
    if eip is None:
        return

    async def check(p: JSON) -> JSON | None:
        now = await ctx.deps.provider.addresses(region)
        mine = any(a.allocation_id == p["allocation_id"] and a.instance_id == lb_id for a in now)
        return {"already": True} if mine else None

    async def apply(p: JSON) -> JSON:
        await ctx.deps.provider.associate_address(region, p["allocation_id"], lb_id)
        return {}

    params = {"allocation_id": eip.allocation_id, "instance_id": lb_id}
    await ctx.effect(f"eip:{eip.allocation_id}", params, check=check, apply=apply)


async def _existing_lb(ctx: RunContext, snap: Snapshot, region: str) -> Instance | None:
    """A running load balancer of `region` whose health is not known yet (drwatch just
    restarted: its checks start from unknown) gets up to `action_timeout` to answer
    before a new one is launched beside it; none running, or one seen down: None."""
    running = _live(snap, region, Role.LOAD_BALANCER)
    if all(_seen_down(snap, i) for i in running):
        return None

    async def probe() -> Instance | None:
        return _serving_lb(await ctx.deps.fleet.refresh(), region)

    try:
        return await ctx.wait_for(
            f"a load balancer in {region} to answer", probe, ctx.deps.settings.action_timeout
        )
    except StepError:
        return None


def _seen_down(snap: Snapshot, inst: Instance) -> bool:
    app = snap.get(inst.id, Layer.APP)
    return app is not None and app.health is Health.DOWN


async def _launch_lb(
    ctx: RunContext, region: str, backends: list[str]
) -> tuple[Instance, Snapshot]:
    facts = _facts(ctx)
    snap = ctx.deps.fleet.latest()
    groups = [i.group for i in snap.fleet.in_region(region) if i.role is Role.LOAD_BALANCER]
    group = groups[0] if groups else f"lb-{region}"
    here = in_region(ctx, region, group)
    params = {
        "zones": await healthy_zones(here),
        "image_id": facts["images"][Role.LOAD_BALANCER.value],
        "user_data": user_data({"DRWATCH_BACKENDS": ",".join(backends)}),
        "tags": {"Name": f"{group}-fo", GROUP_TAG: group, ROLE_TAG: "load_balancer"},
    }
    result = await launch(here, "launch_lb", params)
    new_id = result["instance_id"]
    await wait_running(here, new_id)

    async def probe() -> tuple[Instance, Snapshot] | None:
        s = await ctx.deps.fleet.refresh()
        inst = s.fleet.get(new_id)
        up = inst is not None and is_up(s, new_id, Layer.AGENT) and is_up(s, new_id, Layer.APP)
        return (inst, s) if up and inst is not None else None

    return await ctx.wait_for(f"{new_id} to answer", probe, ctx.deps.settings.healthy_timeout)


# -- 6. DNS -------------------------------------------------------------------------------


def _switched(records: list[DnsRecord], address: str) -> list[DnsRecord]:
    """The failover records that must change for both to point at `address`."""
    primary, secondary = failover_pair(records)
    return [
        dataclasses.replace(r, values=(address,))
        for r in (primary, secondary)
        if r is not None and r.values != (address,)
    ]


async def switch_dns(ctx: RunContext) -> Outcome:
    setup = ctx.deps.region
    address = ctx.results["ensure_load_balancer"]["address"]
    zone, name = setup.hosted_zone, setup.public_name

    async def current() -> list[DnsRecord]:
        return await setup.dns.records(zone, name)

    async def check(p: JSON) -> JSON | None:
        primary, _ = failover_pair(await current())
        if primary is not None and primary.values == (p["address"],):
            return {"already": True, "change_id": ""}
        return None

    async def apply(p: JSON) -> JSON:
        return await _change(ctx, p["address"], current)

    result = await ctx.effect("switch", {"address": address}, check=check, apply=apply)
    address = result.get("address", address)
    if result.get("change_id"):
        await _insync(ctx, result["change_id"])
    primary, _ = failover_pair(await current())
    if primary is None or primary.values != (address,):
        raise StepError(
            f"{name} PRIMARY reads {primary.values if primary else 'nothing'} after the change"
        )
    how = "already pointed" if result.get("already") else "now points"
    return done(
        f"{name} PRIMARY {how} at {address} ({_facts(ctx)['standby']}); change "
        f"{result.get('change_id') or '-'} INSYNC",
        # In the fleet view's time: the service check must answer after this.
        switched_at=(await ctx.deps.fleet.refresh()).taken_at,
    )


async def _change(
    ctx: RunContext, address: str, current: Callable[[], Awaitable[list[DnsRecord]]]
) -> JSON:
    """One UPSERT of the failover records, retried while Route 53 fails; after every
    failure the records are read back, so a change that did apply is not made again."""
    setup = ctx.deps.region
    last = ""

    async def attempt() -> JSON | None:
        nonlocal last
        try:
            records = await current()
            changes = _switched(records, address)
            if not changes:
                return {"address": address, "change_id": "", "already": True}
            change_id = await setup.dns.upsert(setup.hosted_zone, changes)
        except ProviderError as err:
            if not err.retryable:
                raise StepError(f"Route 53 refused the change: {err}") from None
            last = str(err)
            return None
        return {"address": address, "change_id": change_id}

    try:
        return await ctx.wait_for("Route 53 to accept the change", attempt, setup.change_timeout)
    except StepError as err:
        raise StepError(f"{err}; last error: {last}; the records were not changed") from None


async def _insync(ctx: RunContext, change_id: str) -> None:
    setup = ctx.deps.region

    async def probe() -> bool | None:
        try:
            status = await setup.dns.change_status(change_id)
        except ProviderError as err:
            if not err.retryable:
                raise StepError(f"change {change_id}: {err}") from None
            return None
        return True if status == "INSYNC" else None

    await ctx.wait_for(f"change {change_id} to be INSYNC", probe, setup.change_timeout)


# -- 7. verify ----------------------------------------------------------------------------


async def verify_service(ctx: RunContext) -> Outcome:
    group = ctx.deps.region.service_group
    name = ctx.deps.region.public_name
    if not group:
        return skipped("no load balancer group has a service_url: the public name is not checked")
    since = ctx.results["switch_dns"]["switched_at"]

    async def probe() -> bool | None:
        snap = await ctx.deps.fleet.refresh()
        health = snap.get(group, Layer.SERVICE)
        fresh = health is not None and (health.ok_at or 0.0) > since
        return True if fresh and is_up(snap, group, Layer.SERVICE) else None

    await ctx.wait_for(
        f"the service to answer through {name}", probe, ctx.deps.settings.service_timeout
    )
    return done(f"the service answers through {name} from {_facts(ctx)['standby']}")


PLAYBOOK = Playbook(
    PlaybookName.REGION_FAILOVER,
    (
        Step("preconditions", preconditions),
        Step("fence_lost_region", fence_lost_region),
        Step("promote_replica", promote_replica),
        Step("scale_app_servers", scale_app_servers),
        Step("ensure_load_balancer", ensure_load_balancer),
        Step("switch_dns", switch_dns),
        Step("verify_service", verify_service),
    ),
)
