"""Applying and healing faults on a running sandbox, each where a real fault would show.

Every applied fault is remembered with what it resolved to (the instance id behind a
name, the volume id behind a Name tag), so `heal TARGET` undoes exactly what was done
to that target, newest first, even after the names have moved on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from drwatch.logs import get_logger
from drwatch.sandbox.backups import SandboxBackups
from drwatch.sandbox.cloud import SandboxError
from drwatch.sandbox.cluster import leader_of
from drwatch.sandbox.faults import (
    APPROVE,
    EVERY_SNAPSHOT,
    HEAL,
    OFFSITE,
    VERBS,
    Fault,
    TargetKind,
    check_target,
)
from drwatch.sandbox.hosts import AppMode, SimHost
from drwatch.sandbox.pgcluster import PgError
from drwatch.sandbox.world import Sandbox

log = get_logger(component="sandbox.chaos")


@dataclass
class Applied:
    fault: Fault
    resolved: str  # instance/volume/snapshot id, or the zone/region/watcher itself
    at: float
    undo: Callable[[], Awaitable[None]]


class Chaos:
    """The fault verbs over one sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox
        self.active: list[Applied] = []
        self._lock = asyncio.Lock()

    async def do(self, fault: Fault) -> str:
        """Apply a fault (or `heal`); returns what was done, raises SandboxError if it can't."""
        problem = check_target(self.sb.topo, fault.verb, fault.target)
        if problem is not None:
            raise SandboxError(problem)
        if fault.verb == APPROVE:
            # The operator's answer changes nothing here: it waits for the daemon (a
            # ladder's waiting step may be minutes away) without holding the faults back.
            async with asyncio.timeout(APPROVE_WAIT_S + 10):
                return await self._apply(fault)
        async with self._lock, asyncio.timeout(30):
            if fault.verb == HEAL:
                return await self._heal(fault.target)
            return await self._apply(fault)

    async def _apply(self, fault: Fault) -> str:
        kind, _ = VERBS[fault.verb]
        resolved = await self._resolve(kind, fault.target)
        undo = await _APPLY[fault.verb](self, fault, resolved)
        self.active.append(Applied(fault, resolved, time.time(), undo))
        await self.sb.sync_hosts()
        log.info("fault.apply", verb=fault.verb, target=fault.target, resolved=resolved)
        detail = undo.detail if isinstance(undo, _Told) else resolved
        return f"{fault.verb} {fault.target} ({detail})"

    async def _heal(self, target: str) -> str:
        mine = [a for a in self.active if a.fault.target == target]
        for applied in reversed(mine):
            await applied.undo()
            self.active.remove(applied)
        await self.sb.sync_hosts()
        log.info("fault.heal", target=target, healed=[a.fault.verb for a in mine])
        if not mine:
            return f"nothing to heal on {target}"
        return f"healed {target}: {', '.join(a.fault.verb for a in mine)}"

    async def _resolve(self, kind: TargetKind, target: str) -> str:
        view = self.sb.view
        if kind in (TargetKind.VANTAGE, TargetKind.MEMBER) and target.partition("/")[0] == "leader":
            leader = await leader_of(self.sb.session(), self.sb.api_urls)
            if leader is None:
                raise SandboxError("no watcher leads now: cannot cut the leader's path")
            zone = target.partition("/")[2]
            return f"{leader}/{zone}" if zone else leader
        if kind is TargetKind.INSTANCE:
            inst = view.named(target)
            if inst is None:
                raise SandboxError(f"no live instance is named {target!r}")
            return inst.id
        if kind in (TargetKind.VOLUME, TargetKind.SNAPSHOT):
            return self._storage(kind, target)
        return target

    def _storage(self, kind: TargetKind, target: str) -> str:
        """A volume's or snapshot's id; `VOLUME/*`: every snapshot of that volume."""
        view = self.sb.view
        every = kind is TargetKind.SNAPSHOT and target.endswith(EVERY_SNAPSHOT)
        if kind is TargetKind.VOLUME or every:
            vol = view.volume_named(target.removesuffix(EVERY_SNAPSHOT))
            if vol is None:
                raise SandboxError(f"no volume is named {target!r}")
            return EVERY_SNAPSHOT + vol.id if every else vol.id
        snap = view.snapshot_named(target)
        if snap is None:
            raise SandboxError(f"no snapshot is named {target!r}")
        return snap.id

    def host(self, instance_id: str) -> SimHost:
        host = self.sb.hosts.get(instance_id)
        if host is None:
            raise SandboxError(f"instance {instance_id} has no simulated host")
        return host

    async def ec2_call(self, instance_id: str, method: str) -> None:
        """A provider call for an instance, straight to moto (the front may be faulted)."""
        inst = self.sb.view.instances[instance_id]
        call = getattr(self.sb.moto.ec2(inst.region), method)
        await asyncio.to_thread(call, InstanceIds=[instance_id])
        await self.sb.poll()


Undo = Callable[[], Awaitable[None]]
Applier = Callable[[Chaos, Fault, str], Awaitable[Undo]]


async def _nothing() -> None:
    return None


# The incident, or the step of its playbook that waits (restore_from_dump), may be
# minutes away: a ladder walks every snapshot back first.
APPROVE_WAIT_S = 180.0


async def _approve(ch: Chaos, _f: Fault, target: str) -> Undo:
    """The operator approves the open incident on `target` (its region, zone or one of
    its instances) through the daemon's API, with its token, as a person would. The
    incident may still be on its way to awaiting approval: wait for it, within a limit."""
    if not ch.sb.options.api_token or not ch.sb.api_token_file.exists():
        raise SandboxError("approve needs the daemon's API token (sandbox Options.api_token)")
    headers = {"Authorization": f"Bearer {ch.sb.api_token_file.read_text().strip()}"}
    deadline = time.monotonic() + APPROVE_WAIT_S
    while True:
        found = await _awaiting(ch, target, headers)
        if found is not None:
            break
        if time.monotonic() > deadline:
            raise SandboxError(f"approve: no open incident on {target} awaits approval")
        await asyncio.sleep(0.5)
    url = f"{ch.sb.api_url}/api/v1/incidents/{found}/approve"
    try:
        async with ch.sb.session().post(
            url, json={"by": "drill"}, headers=headers, timeout=aiohttp.ClientTimeout(total=5)
        ) as resp:
            if resp.status != 200:
                raise SandboxError(f"approve {found}: the daemon answered HTTP {resp.status}")
    except (aiohttp.ClientError, TimeoutError) as err:
        raise SandboxError(f"approve: the daemon's API did not answer ({err})") from None
    return _nothing


async def _awaiting(ch: Chaos, target: str, headers: dict[str, str]) -> str | None:
    """The id of the open incident on `target` that awaits approval, or whose running
    playbook has a step that waits for one (`pending_approval`), if there is one."""
    url = f"{ch.sb.api_url}/api/v1/status"
    try:
        async with ch.sb.session().get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=5)
        ) as resp:
            found = await resp.json() if resp.status == 200 else {}
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    items = found.get("open_incidents", found) if isinstance(found, dict) else found
    for inc in items if isinstance(items, list) else []:
        named = target in (inc.get("region"), inc.get("zone"), *inc.get("targets", []))
        waits = inc.get("outcome") == "awaiting_approval" or inc.get("pending_approval")
        if named and waits:
            return str(inc["id"])
    return None


async def _stop(ch: Chaos, _f: Fault, iid: str) -> Undo:
    await ch.ec2_call(iid, "stop_instances")
    return lambda: ch.ec2_call(iid, "start_instances")


async def _terminate(ch: Chaos, _f: Fault, iid: str) -> Undo:
    # A terminated instance cannot come back; heal leaves the replacement to drwatch.
    await ch.ec2_call(iid, "terminate_instances")
    return _nothing


async def _impair(ch: Chaos, _f: Fault, iid: str) -> Undo:
    ch.sb.outages.impaired.add(iid)
    ch.sb.front.faults.impaired_instances.add(iid)

    async def undo() -> None:
        ch.sb.outages.impaired.discard(iid)
        ch.sb.front.faults.impaired_instances.discard(iid)

    return undo


async def _kill_agent(ch: Chaos, _f: Fault, iid: str) -> Undo:
    host = ch.host(iid)
    host.faults.agent_killed = True

    async def undo() -> None:
        host.faults.agent_killed = False

    return undo


def _app_mode(mode: AppMode) -> Applier:
    async def apply(ch: Chaos, fault: Fault, iid: str) -> Undo:
        host = ch.host(iid)
        if mode is AppMode.SLOW:
            host.faults.app_delay_s = fault.param("delay")
        if mode is AppMode.FLAP:
            host.faults.app_period_s = fault.param("period")
        host.set_app_mode(mode)

        async def undo() -> None:
            host.set_app_mode(AppMode.OK)

        return undo

    return apply


async def _fill_disk(ch: Chaos, fault: Fault, iid: str) -> Undo:
    host = ch.host(iid)
    host.faults.disk_percent = fault.param("percent")

    async def undo() -> None:
        host.faults.disk_percent = None

    return undo


async def _grow_disk(ch: Chaos, fault: Fault, iid: str) -> Undo:
    host = ch.host(iid)
    host.faults.disk_growth = (time.time(), host.disk_percent(), fault.param("rate"))

    async def undo() -> None:
        host.faults.disk_growth = None

    return undo


async def _zone_outage(ch: Chaos, _f: Fault, zone: str) -> Undo:
    front = ch.sb.front.faults
    ch.sb.outages.zones.add(zone)
    front.impaired_zones.add(zone)
    front.launch_refused_zones.add(zone)

    async def undo() -> None:
        ch.sb.outages.zones.discard(zone)
        front.impaired_zones.discard(zone)
        front.launch_refused_zones.discard(zone)

    return undo


async def _fail_launches(ch: Chaos, _f: Fault, zone: str) -> Undo:
    front = ch.sb.front.faults
    front.launch_refused_zones.add(zone)

    async def undo() -> None:
        front.launch_refused_zones.discard(zone)

    return undo


async def _region_outage(ch: Chaos, _f: Fault, region: str) -> Undo:
    ch.sb.outages.regions.add(region)
    await ch.sb.front.set_region_reachable(region, False)
    storage = ch.sb.backups.storage if ch.sb.backups is not None else None
    if storage is not None:  # the region's object storage goes with it
        await storage.set_region_reachable(region, False)

    async def undo() -> None:
        ch.sb.outages.regions.discard(region)
        await ch.sb.front.set_region_reachable(region, True)
        if storage is not None:
            await storage.set_region_reachable(region, True)

    return undo


def _region_set(name: str) -> Applier:
    async def apply(ch: Chaos, _f: Fault, region: str) -> Undo:
        regions: set[str] = getattr(ch.sb.front.faults, name)
        regions.add(region)

        async def undo() -> None:
            regions.discard(region)

        return undo

    return apply


async def _cut_uplink(ch: Chaos, _f: Fault, _t: str) -> Undo:
    ch.sb.uplink.shut()

    async def undo() -> None:
        ch.sb.uplink.open()

    return undo


async def _corrupt_volume(ch: Chaos, _f: Fault, vid: str) -> Undo:
    ch.sb.outages.corrupt_volumes[vid] = time.time()
    await _on_data(ch.sb.databases.corrupt, "volume", vid)

    async def undo() -> None:
        ch.sb.outages.corrupt_volumes.pop(vid, None)
        await _on_data(ch.sb.databases.corrupt, "volume", vid)  # the same bytes flip back

    return undo


async def _corrupt_snapshot(ch: Chaos, f: Fault, sid: str) -> Undo:
    if sid.startswith(EVERY_SNAPSHOT):
        return await _corrupt_every_snapshot(ch, f, sid[len(EVERY_SNAPSHOT) :])
    ch.sb.outages.corrupt_snapshots.add(sid)
    await _on_data(ch.sb.databases.corrupt, "snapshot", sid)

    async def undo() -> None:
        ch.sb.outages.corrupt_snapshots.discard(sid)
        await _on_data(ch.sb.databases.corrupt, "snapshot", sid)

    return undo


async def _corrupt_every_snapshot(ch: Chaos, _f: Fault, vid: str) -> Undo:
    """Every snapshot of volume `vid` taken so far (the seeded ones, and drwatch's own
    backups) restores corrupt. One whose database copy never materialised holds no
    database at all: it is marked, and nothing on disk changes."""
    await ch.sb.poll()
    sids = sorted(s.id for s in ch.sb.view.snapshots.values() if s.volume_id == vid)
    if not sids:
        raise SandboxError(f"volume {vid} has no snapshot")
    flipped: list[str] = []
    for sid in sids:
        ch.sb.outages.corrupt_snapshots.add(sid)
        try:
            await asyncio.to_thread(ch.sb.databases.corrupt, "snapshot", sid)
            flipped.append(sid)
        except PgError as err:
            log.warning("chaos.snapshot_not_corrupted", snapshot=sid, error=str(err))
    log.info("chaos.every_snapshot_corrupt", volume=vid, snapshots=sids)

    async def undo() -> None:
        ch.sb.outages.corrupt_snapshots.difference_update(sids)
        for sid in flipped:  # the same bytes flip back
            await _on_data(ch.sb.databases.corrupt, "snapshot", sid)

    return undo


async def _on_data(call: Callable[[str, str], None], kind: str, ident: str) -> None:
    try:
        await asyncio.to_thread(call, kind, ident)
    except PgError as err:
        raise SandboxError(str(err)) from None


async def _lag_replica(ch: Chaos, fault: Fault, iid: str) -> Undo:
    host = ch.host(iid)
    await _on_data(ch.sb.databases.lag, iid, str(fault.param("delay")))

    async def undo() -> None:
        await _on_data(ch.sb.databases.lag, host.instance_id, "0")

    return undo


async def _kill_watcher(ch: Chaos, fault: Fault, _t: str) -> Undo:
    await ch.sb.watcher.kill()
    # The runner (drill or sandbox) brings drwatch back on the same state directory.
    ch.sb.after(fault.param("delay"), ch.sb.watcher.start)
    return _nothing


def _backups(ch: Chaos) -> SandboxBackups:
    if ch.sb.backups is None:
        raise SandboxError(
            "backups are off in this sandbox (a drill turns them on: backups = true)"
        )
    return ch.sb.backups


async def _s3_outage(ch: Chaos, _f: Fault, region: str) -> Undo:
    faults = _backups(ch).storage.faults
    faults.s3_outage.add(region)

    async def undo() -> None:
        faults.s3_outage.discard(region)

    return undo


async def _kill_leader(ch: Chaos, fault: Fault, _t: str) -> Undo:
    """SIGKILL whichever watcher leads now; it starts again after `delay`, on its state."""
    leader = await leader_of(ch.sb.session(), ch.sb.api_urls)
    watcher = ch.sb.watcher_named(leader) if leader else None
    if watcher is None:
        raise SandboxError(f"no watcher leads now (leader: {leader or 'none'}): nothing to kill")
    await watcher.kill()
    log.info("fault.leader_killed", leader=leader)
    ch.sb.after(fault.param("delay"), watcher.start)
    return _nothing


async def _etcd_outage(ch: Chaos, _f: Fault, _t: str) -> Undo:
    etcd = ch.sb.etcd
    if etcd is None:
        raise SandboxError("etcd-outage needs several watchers (watchers = 3)")
    etcd.pause()

    async def undo() -> None:
        etcd.resume()

    return undo


async def _cut_vantage(ch: Chaos, _f: Fault, target: str) -> Undo:
    """One watcher's path to one zone's hosts hangs; the others and the provider are fine."""
    watcher, _, zone = target.partition("/")
    healed = asyncio.Event()
    ch.sb.vantage_cuts[(watcher, zone)] = healed

    async def undo() -> None:
        healed.set()
        ch.sb.vantage_cuts.pop((watcher, zone), None)

    return undo


async def _cut_etcd(ch: Chaos, _f: Fault, watcher: str) -> Undo:
    """One watcher's path to etcd black-holes; the others still reach it."""
    path = ch.sb.etcd_paths.get(watcher)
    if path is None:
        raise SandboxError(f"no watcher {watcher!r} in this sandbox")
    path.open.clear()

    async def undo() -> None:
        path.open.set()

    return undo


async def _operator(ch: Chaos, action: str) -> None:
    """The operator's control through the daemon's API, with its token, as a person would."""
    token_file = ch.sb.api_token_file
    if not ch.sb.options.api_token or not token_file.exists():
        raise SandboxError(f"{action} needs the daemon's API token (sandbox Options.api_token)")
    headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
    url = f"{ch.sb.api_url}/api/v1/{action}"
    try:
        async with ch.sb.session().post(
            url, json={"by": "drill"}, headers=headers, timeout=aiohttp.ClientTimeout(total=5)
        ) as resp:
            if resp.status != 200:
                raise SandboxError(f"{action}: the daemon answered HTTP {resp.status}")
    except (aiohttp.ClientError, TimeoutError) as err:
        raise SandboxError(f"{action}: the daemon's API did not answer ({err})") from None


async def _pause(ch: Chaos, _f: Fault, _t: str) -> Undo:
    await _operator(ch, "pause")
    return lambda: _operator(ch, "resume")


async def _resume(ch: Chaos, _f: Fault, _t: str) -> Undo:
    await _operator(ch, "resume")
    return _nothing


async def _partition_zone(ch: Chaos, _f: Fault, zone: str) -> Undo:
    """The watchers' own path to the zone's instances is cut (their requests hang); the
    provider, the load balancers' path to them (the service) and the canaries are fine."""
    hosts = [
        h
        for h in ch.sb.hosts.values()
        if (inst := ch.sb.view.instances.get(h.instance_id)) is not None and inst.zone == zone
    ]
    for host in hosts:
        host.watcher_path.shut()

    async def undo() -> None:
        for host in hosts:
            host.watcher_path.open()

    return undo


async def _offsite_outage(ch: Chaos, _f: Fault, _t: str) -> Undo:
    faults = _backups(ch).offsite.faults
    faults.s3_outage.add(OFFSITE)

    async def undo() -> None:
        faults.s3_outage.discard(OFFSITE)

    return undo


async def _corrupt_backup(ch: Chaos, _f: Fault, data_class: str) -> Undo:
    backups = _backups(ch)
    restore = await asyncio.to_thread(backups.corrupt_newest, data_class)

    async def undo() -> None:
        await asyncio.to_thread(restore)

    return undo


class _Told:
    """Nothing to undo; what the verb found, for the event's result."""

    def __init__(self, detail: str) -> None:
        self.detail = detail

    async def __call__(self) -> None:
        return None


async def _restore_test(ch: Chaos, _f: Fault, data_class: str) -> Undo:
    result = await _backups(ch).restore_test(data_class)
    log.info("backups.restore_test", result=result)
    return _Told(result)


_APPLY: dict[str, Applier] = {
    "approve": _approve,
    "stop-instance": _stop,
    "terminate-instance": _terminate,
    "impair-instance": _impair,
    "kill-agent": _kill_agent,
    "fail-app": _app_mode(AppMode.FAIL),
    "hang-app": _app_mode(AppMode.HANG),
    "slow-app": _app_mode(AppMode.SLOW),
    "flap-app": _app_mode(AppMode.FLAP),
    "fill-disk": _fill_disk,
    "zone-outage": _zone_outage,
    "region-outage": _region_outage,
    "api-outage": _region_set("api_outage"),
    "throttle-api": _region_set("throttled"),
    "cut-uplink": _cut_uplink,
    "fail-launches": _fail_launches,
    "corrupt-volume": _corrupt_volume,
    "corrupt-snapshot": _corrupt_snapshot,
    "kill-watcher": _kill_watcher,
    "kill-leader": _kill_leader,
    "etcd-outage": _etcd_outage,
    "cut-vantage": _cut_vantage,
    "cut-etcd": _cut_etcd,
    "grow-disk": _grow_disk,
    "lag-replica": _lag_replica,
    "s3-outage": _s3_outage,
    "offsite-outage": _offsite_outage,
    "corrupt-backup": _corrupt_backup,
    "restore-test": _restore_test,
    "pause": _pause,
    "resume": _resume,
    "partition-zone": _partition_zone,
    "refuse-credentials": _region_set("credentials_refused"),
}
assert set(_APPLY) == set(VERBS), "every fault verb has an applier"
