"""Test doubles for playbook tests: simulated hosts over an in-memory provider.

`SimulatedHosts` is both the `FleetView` and the `AgentActions` a playbook needs. It
reads the fleet from the provider (tags -> roles and groups), says every running
instance's agent and app are up unless a test marks it `down`, reports a database
check like the sandbox's agent (role, and integrity `corrupt` when an attached volume,
or the snapshot it was made from, is marked corrupt), and applies agent actions the way
the sandbox hosts do (idempotent: a set of backends, a role, a database address).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from drwatch.act.base import (
    GROUP_TAG,
    JSON,
    ROLE_TAG,
    ActSettings,
    BackupRef,
    Deps,
    GroupInfo,
    Playbook,
)
from drwatch.act.journal import Journal
from drwatch.act.playbooks import all_playbooks
from drwatch.act.runner import Runner
from drwatch.errors import DrwatchError
from drwatch.model.fleet import Fleet, Instance, InstanceState, Role
from drwatch.model.observation import Health, Layer, TargetHealth
from drwatch.model.plan import Plan, PlaybookName, RunOutcome, RunProgress
from drwatch.model.snapshot import HealthKey, Snapshot
from drwatch.providers.base import AddressInfo, CloudInstance, Provider, Tags, VolumeInfo
from drwatch.providers.fake import FakeProvider


class AgentUnreachableError(DrwatchError):
    """The simulated agent does not answer (host down or stopped)."""


@dataclass
class SimulatedHosts:
    """FleetView + AgentActions over a provider, for tests."""

    provider: Provider
    regions: tuple[str, ...] = ("us-east-1",)
    groups: Mapping[str, GroupInfo] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)  # volume or snapshot ids
    roles: dict[str, str] = field(default_factory=dict)  # database role by instance id
    backends: dict[str, set[str]] = field(default_factory=dict)  # by LB instance id
    databases: dict[str, str] = field(default_factory=dict)  # by app instance id
    actions: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    restores: list[tuple[str, str, int]] = field(default_factory=list)  # (host, backup, bytes)
    restored_data: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    fail_restores: bool = False  # a restore breaks after the first block
    now: float = 1_000_000.0
    _latest: Snapshot = field(default_factory=lambda: Snapshot(taken_at=0.0, fleet=Fleet()))

    # -- FleetView ------------------------------------------------------------------------

    def latest(self) -> Snapshot:
        return self._latest

    async def refresh(self) -> Snapshot:
        cloud: list[CloudInstance] = []
        volumes: list[VolumeInfo] = []
        addresses: list[AddressInfo] = []
        for region in self.regions:
            cloud += await self.provider.instances(region)
            volumes += await self.provider.volumes(region)
            addresses += await self.provider.addresses(region)
        fleet = Fleet(tuple(_instance(c) for c in cloud if c.tag(ROLE_TAG)), self.now)
        health: dict[HealthKey, TargetHealth] = {}
        for inst in fleet:
            self._host_health(inst, volumes, health)
        for group in self.groups.values():
            self._service_health(group, fleet, addresses, health)
        self._latest = Snapshot(self.now, fleet, MappingProxyType(health))
        return self._latest

    def _host_health(
        self, inst: Instance, volumes: list[VolumeInfo], out: dict[HealthKey, TargetHealth]
    ) -> None:
        running = inst.state is InstanceState.RUNNING
        up = running and inst.id not in self.down
        out[(inst.id, Layer.PROVIDER)] = self._th(inst.id, Layer.PROVIDER, running)
        out[(inst.id, Layer.APP)] = self._th(inst.id, Layer.APP, up)
        detail = self._facts(inst, volumes) if up and inst.role is Role.DATABASE else {}
        out[(inst.id, Layer.AGENT)] = self._th(inst.id, Layer.AGENT, up, detail)

    def _service_health(
        self,
        group: GroupInfo,
        fleet: Fleet,
        addresses: list[AddressInfo],
        out: dict[HealthKey, TargetHealth],
    ) -> None:
        if group.role is not Role.LOAD_BALANCER or group.elastic_ip is None:
            return
        eip = next((a for a in addresses if _names(a, group.elastic_ip)), None)
        holder = fleet.get(eip.instance_id) if eip and eip.instance_id else None
        up = (
            holder is not None
            and holder.state is InstanceState.RUNNING
            and holder.id not in self.down
        )
        out[(group.name, Layer.SERVICE)] = self._th(group.name, Layer.SERVICE, up)

    def _facts(self, inst: Instance, volumes: list[VolumeInfo]) -> dict[str, Any]:
        mine = [v for v in volumes if v.attached_to == inst.id]
        bad = any(v.id in self.corrupt or v.snapshot_id in self.corrupt for v in mine)
        data = {"role": self.roles.get(inst.id, "primary"), "integrity": "corrupt" if bad else "ok"}
        check = {"name": "database", "kind": "database", "status": "ok", "data": data}
        return {"checks": {"database": check}}

    def _th(self, target: str, layer: Layer, up: bool, detail: JSON | None = None) -> TargetHealth:
        return TargetHealth(
            target=target,
            layer=layer,
            health=Health.UP if up else Health.DOWN,
            since=self.now,
            attempted_at=self.now,
            ok_at=self.now if up else None,
            last=Health.UP if up else Health.DOWN,
            detail=MappingProxyType(detail or {}),
        )

    # -- AgentActions ---------------------------------------------------------------------

    async def action(self, instance: Instance, name: str, params: Mapping[str, str]) -> JSON:
        current = self._latest.fleet.get(instance.id)
        state = current.state if current else instance.state
        if instance.id in self.down or state is not InstanceState.RUNNING:
            raise AgentUnreachableError(f"{instance.name}: agent does not answer")
        self.actions.append((instance.id, name, dict(params)))
        return self._apply(instance, name, params)

    def _apply(self, instance: Instance, name: str, params: Mapping[str, str]) -> JSON:
        if name == "register_backend":
            self.backends.setdefault(instance.id, set()).add(params["address"])
            return {"backends": sorted(self.backends[instance.id])}
        if name == "deregister_backend":
            self.backends.setdefault(instance.id, set()).discard(params["address"])
            return {"backends": sorted(self.backends[instance.id])}
        if name == "promote":
            previous = self.roles.get(instance.id, "primary")
            self.roles[instance.id] = "primary"
            return {"role": "primary", "previous_role": previous}
        if name == "set_database":
            self.databases[instance.id] = params["address"]
            return {"database": params["address"]}
        raise AgentUnreachableError(f"{name} is not an allow-listed action")

    def count(self, name: str) -> int:
        return sum(1 for _, n, _ in self.actions if n == name)

    # -- DumpRestore ----------------------------------------------------------------------

    def missing(self) -> str | None:
        return None

    async def restore(
        self, instance: Instance, backup_id: str, stream: AsyncIterator[bytes]
    ) -> JSON:
        """Read the whole stream into the host (as the agent's pg_restore would)."""
        if instance.id in self.down:
            raise AgentUnreachableError(f"{instance.name}: agent does not answer")
        if self.fail_restores:
            await anext(stream)
            raise AgentUnreachableError(f"{instance.name}: the connection broke mid-restore")
        data = b"".join([chunk async for chunk in stream])
        self.restores.append((instance.id, backup_id, len(data)))
        self.restored_data[instance.id] = (backup_id, data)
        return {"backup_id": backup_id, "bytes": len(data)}

    async def restored(self, instance: Instance, backup_id: str) -> JSON | None:
        found = self.restored_data.get(instance.id)
        if found is None or found[0] != backup_id:
            return None
        return {"backup_id": backup_id, "bytes": len(found[1])}


@dataclass
class FakeCatalogue:
    """drwatch's backup catalogue for playbook tests: refs in memory, a dump's plaintext
    from `dumps_data`, and whether the watcher holds the private key."""

    snapshot_refs: list[BackupRef] | None = None
    dump_refs: list[BackupRef] = field(default_factory=list)
    dumps_data: dict[str, bytes] = field(default_factory=dict)
    holds_key: bool = True
    marked: list[tuple[str, str]] = field(default_factory=list)
    streamed: int = 0
    closed: int = 0  # streams finished or closed early

    def snapshots(self, group: str) -> Sequence[BackupRef] | None:
        return self.snapshot_refs

    def dumps(self, group: str) -> Sequence[BackupRef]:
        return [r for r in self.dump_refs if r.state == "verified"]

    def mark_bad(self, ref: BackupRef, why: str) -> None:
        self.marked.append((ref.backup_id, why))

    def key_missing(self) -> str | None:
        return None if self.holds_key else "no private key (backup.watcher_private_key_file)"

    async def plaintext(self, ref: BackupRef) -> AsyncGenerator[bytes]:
        self.streamed += 1
        data = self.dumps_data[ref.backup_id]
        try:
            for i in range(0, len(data), 4096):
                yield data[i : i + 4096]
        finally:
            self.closed += 1


@dataclass
class ManualApprovals:
    """Approvals an operator gives by hand in a test (`approve`), and what was asked."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    given: dict[str, str] = field(default_factory=dict)  # incident id -> by

    def request(self, incident_id: str, what: str, now: float) -> None:
        self.requests.append((incident_id, what))

    def approved(self, incident_id: str, what: str) -> str | None:
        return self.given.get(incident_id)

    def approve(self, incident_id: str, by: str = "ops") -> None:
        self.given[incident_id] = by


def _names(addr: AddressInfo, wanted: str) -> bool:
    return addr.allocation_id == wanted or dict(addr.tags).get("Name") == wanted


def _instance(c: CloudInstance) -> Instance:
    return Instance(
        id=c.id,
        name=c.tag("Name") or c.id,
        region=c.region,
        zone=c.zone,
        role=Role(c.tag(ROLE_TAG) or "app_server"),
        group=c.tag(GROUP_TAG) or "",
        state=c.state,
        private_ip=c.private_ip,
        public_ip=c.public_ip,
        image_id=c.image_id,
        volumes=c.volumes,
        tags=c.tags,
        launched_at=c.launched_at,
    )


# -- a small copy of the sandbox's default topology, for playbook tests --------------------

REGION = "us-east-1"
APP_PORT = 8080
TEST_GROUPS: Mapping[str, GroupInfo] = MappingProxyType(
    {
        "web-lb": GroupInfo(
            "web-lb", Role.LOAD_BALANCER, elastic_ip="web-eip", size=2, service_checked=True
        ),
        "app": GroupInfo("app", Role.APP_SERVER, size=6, app_port=APP_PORT),
        "db": GroupInfo("db", Role.DATABASE, size=2, has_app_checks=False),
    }
)
_LAYOUT = (
    ("lb-1", "web-lb", Role.LOAD_BALANCER, "a"),
    ("lb-2", "web-lb", Role.LOAD_BALANCER, "b"),
    ("app-1", "app", Role.APP_SERVER, "a"),
    ("app-2", "app", Role.APP_SERVER, "a"),
    ("app-3", "app", Role.APP_SERVER, "b"),
    ("app-4", "app", Role.APP_SERVER, "b"),
    ("app-5", "app", Role.APP_SERVER, "c"),
    ("app-6", "app", Role.APP_SERVER, "c"),
    ("db-1", "db", Role.DATABASE, "a"),
    ("db-2", "db", Role.DATABASE, "b"),
)


@dataclass
class World:
    """A seeded provider, the simulated hosts over it, and names -> ids."""

    provider: FakeProvider
    hosts: SimulatedHosts
    ids: dict[str, str]
    eip: str  # allocation id of web-eip
    data_volume: str  # db-1-data
    snapshots: list[str]  # db-1-data-snap-1 (oldest) .. -snap-3 (newest)

    def id(self, name: str) -> str:
        return self.ids[name]

    async def instance(self, name: str) -> CloudInstance:
        """The seeded instance `name` as the provider shows it now."""
        found = [i for i in await self.provider.instances(REGION) if i.id == self.ids[name]]
        return found[0]

    async def launched(self) -> list[CloudInstance]:
        """Running instances that were not seeded: what playbooks launched."""
        seeded = set(self.ids.values())
        return [
            i
            for i in await self.provider.instances(REGION)
            if i.id not in seeded and i.state is InstanceState.RUNNING
        ]


def seed_world(provider: FakeProvider) -> World:
    """Seed `provider` (a FakeProvider) with the default topology's us-east-1 half."""
    images = {
        role: provider.add_image(REGION, f"drwatch-{role.value}", tags=((ROLE_TAG, role.value),)).id
        for role in Role
    }
    ids: dict[str, str] = {}
    for n, (name, group, role, zone) in enumerate(_LAYOUT):
        tags: Tags = (
            (GROUP_TAG, group),
            (ROLE_TAG, role.value),
            ("drwatch:agent-addr", f"127.0.0.1:{7000 + n}"),
            ("drwatch:app-addr", f"127.0.0.1:{8000 + n}"),
        )
        inst = provider.add_instance(
            REGION, REGION + zone, name=name, tags=tags, image_id=images[role]
        )
        ids[name] = inst.id
    vol = provider.add_volume(
        REGION, REGION + "a", tags=(("Name", "db-1-data"),), attached_to=ids["db-1"]
    )
    snaps = [
        provider.add_snapshot(
            REGION, vol.id, tags=(("Name", f"db-1-data-snap-{k}"),), started_at=1000.0 * k
        ).id
        for k in (1, 2, 3)
    ]
    eip = provider.add_address(REGION, tags=(("Name", "web-eip"),), instance_id=ids["lb-1"])
    hosts = SimulatedHosts(provider, groups=TEST_GROUPS)
    hosts.roles[ids["db-2"]] = "replica"
    names = [f"app-{k}" for k in range(1, 7)]
    for lb in ("lb-1", "lb-2"):
        hosts.backends[ids[lb]] = set(names)
    return World(provider, hosts, ids, eip.allocation_id, vol.id, snaps)


class CrashAt:
    """A runner crash hook: records every point it passes, and at the `n`-th one "dies"
    the way a SIGKILL looks to the journal (the run's task ends, nothing more is written)."""

    def __init__(self, n: int | None = None, *, at: str | None = None) -> None:
        self.n = n
        self.at = at  # or: die at the first point whose name ends with this
        self.points: list[str] = []

    def __call__(self, point: str) -> None:
        self.points.append(point)
        by_count = self.n is not None and len(self.points) == self.n
        by_name = self.at is not None and point.endswith(self.at)
        if by_count or by_name:
            self.n, self.at = None, None  # a process dies once
            raise asyncio.CancelledError(f"simulated crash at {point}")


async def run_plan(
    journal_path: Path,
    deps: Deps,
    plan: Plan,
    *,
    owner: str,
    hook: CrashAt | None = None,
    kill_switch: Callable[[], bool] = lambda: False,
    resume: bool = False,
    within: float = 30.0,
    playbooks: dict[PlaybookName, Playbook] | None = None,
) -> RunProgress | None:
    """One "process lifetime": open the journal, submit (or resume), wait, close.
    `playbooks` replaces the registry (a test's own playbook around one helper)."""
    journal = Journal(journal_path)
    books = playbooks if playbooks is not None else all_playbooks()
    runner = Runner(journal, books, deps, owner, kill_switch, crash_hook=hook or CrashAt())
    try:
        if resume:
            await runner.resume()
        else:
            runner.submit(plan)
        return await runner.wait(plan.incident_id, within)
    finally:
        await runner.aclose()
        journal.close()


Setup = Callable[[], tuple[World, Deps, Plan]]
Verify = Callable[[World, str], Awaitable[None]]


async def crash_at_every_point(
    tmp_path: Path,
    setup: Setup,
    verify: Verify,
    *,
    playbooks: dict[PlaybookName, Playbook] | None = None,
) -> list[str]:
    """Run the plan once to learn its crash points; then, for each point, a fresh world:
    run until the crash there, resume with a new runner on the same journal, and `verify`
    the world (with the point's name for the message). Returns the points exercised."""
    world, deps, plan = setup()
    clean = CrashAt()
    books = playbooks
    progress = await run_plan(
        tmp_path / "clean.db", deps, plan, owner="w1", hook=clean, playbooks=books
    )
    _expect_outcome(progress, RunOutcome.SUCCEEDED, "clean run")
    await verify(world, "clean run")
    for n, point in enumerate(clean.points, start=1):
        world, deps, plan = setup()
        journal = tmp_path / f"crash-{n}.db"
        first = await run_plan(journal, deps, plan, owner="w1", hook=CrashAt(n), playbooks=books)
        _expect_outcome(first, RunOutcome.RUNNING, f"crashed at {point}")
        second = await run_plan(journal, deps, plan, owner="w2", resume=True, playbooks=books)
        _expect_outcome(second, RunOutcome.SUCCEEDED, f"resumed after {point}")
        await verify(world, point)
    return clean.points


def _expect_outcome(progress: RunProgress | None, want: RunOutcome, context: str) -> None:
    if progress is None or progress.outcome is not want:
        detail = progress.detail if progress else "no progress recorded"
        raise AssertionError(
            f"{context}: expected {want.value}, got {progress and progress.outcome} ({detail})"
        )


# Short deadlines and polls: tests never wait on a real cloud.
FAST_SETTINGS = ActSettings(
    poll_interval=0.001,
    launch_timeout=5,
    healthy_timeout=5,
    stop_timeout=5,
    volume_timeout=5,
    snapshot_timeout=5,
    action_timeout=5,
    service_timeout=5,
    describe_lag=1.0,
)


def new_world() -> tuple[World, Deps]:
    """A freshly seeded world and the Deps a runner needs to act on it."""
    world = seed_world(FakeProvider([REGION]))
    return world, Deps(world.provider, world.hosts, world.hosts, TEST_GROUPS, FAST_SETTINGS)
