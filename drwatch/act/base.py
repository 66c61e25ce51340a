"""What playbooks depend on: small Protocols, their settings, and the step machinery.

A playbook is a tuple of named steps. A step is an async function of a `RunContext`
that returns `done(...)` or `skipped(reason)`, or raises `StepError`. Every side
effect inside a step goes through `ctx.effect(key, params, check=..., apply=...)`:
the runner journals the intent (with `params`) before `apply` runs, asks `check`
first whether the world already shows it done, and on a resumed run hands back the
journaled result instead of applying again. Steps must therefore be safe to re-run
from the top: reads and waits repeat, side effects do not.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from drwatch.errors import DrwatchError
from drwatch.model.fleet import Instance, Role
from drwatch.model.observation import Health, Layer
from drwatch.model.plan import Plan, PlaybookName
from drwatch.model.regions import AddressBook
from drwatch.model.snapshot import Snapshot
from drwatch.providers.base import Provider, Tags
from drwatch.providers.dns import Dns, NullDns
from drwatch.roles import RoleMemory, database_check, reported_role

JSON = dict[str, Any]
T = TypeVar("T")

RUN_TAG = "drwatch:run"
STEP_TAG = "drwatch:step"
GROUP_TAG = "drwatch:group"
ROLE_TAG = "drwatch:role"
# Copied from an old instance to its replacement: what makes it a member of the group.
COPIED_TAGS = ("Name", GROUP_TAG, ROLE_TAG)


class FleetView(Protocol):
    """The fleet and its health as the daemon sees it (discovery + the health store)."""

    def latest(self) -> Snapshot: ...

    async def refresh(self) -> Snapshot:
        """Rediscover now and return a snapshot that includes instances launched since."""


class AgentActions(Protocol):
    """Allow-listed actions on a host's agent (`register_backend`, `promote`, ...).

    Agents make every action idempotent: registering a registered backend, promoting a
    primary or setting the database it already uses changes nothing.
    """

    async def action(self, instance: Instance, name: str, params: Mapping[str, str]) -> JSON: ...


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """The slice of a group's configuration that playbooks need."""

    name: str
    role: Role
    elastic_ip: str | None = None
    size: int | None = None
    app_port: int | None = None
    # Databases: whether the app layer is checked on them (otherwise the agent alone).
    has_app_checks: bool = True
    # Load balancers: whether the group's service is checked (it has a service_url).
    service_checked: bool = False


@dataclass(frozen=True, slots=True)
class ActSettings:
    """Deadlines (seconds) and launch defaults. Every wait in a playbook uses one of these."""

    poll_interval: float = 1.0
    launch_timeout: float = 180.0  # a launched instance reaches `running`
    healthy_timeout: float = 240.0  # ... and shows in the fleet with agent (and app) up
    stop_timeout: float = 120.0  # a stopped instance reaches `stopped`
    volume_timeout: float = 120.0  # a volume becomes `available` / attached
    snapshot_timeout: float = 600.0  # a snapshot completes
    approval_timeout: float = 3600.0  # an operator approves a gated step (restore_from_dump)
    restore_timeout: float = 6 * 3600.0  # a dump is restored into a new database host
    action_timeout: float = 30.0  # one agent action
    service_timeout: float = 60.0  # the service answers through the load balancer
    # How long a resource EC2 has just created may stay missing from describe calls. A
    # resumed create without a client token looks this long before making it again.
    describe_lag: float = 30.0
    instance_type: str = "t3.micro"
    data_device: str = "/dev/sdf"


def no_residency_rule(_from_region: str, _to_region: str) -> str | None:
    """The data-residency check `region.failover` asks: why moving the service's data from
    one region to the other breaks a residency rule, or None when it does not."""
    return None


@dataclass(frozen=True, slots=True)
class RegionSetup:
    """What `region.failover` needs beyond the compute provider (config `[dns]`)."""

    dns: Dns = field(default_factory=NullDns)
    hosted_zone: str = ""
    public_name: str = ""
    # The load balancer group whose service check goes through the public name.
    service_group: str = ""
    change_timeout: float = 120.0
    addresses: AddressBook = field(default_factory=AddressBook)
    residency: Callable[[str, str], str | None] = no_residency_rule


@dataclass(frozen=True, slots=True)
class BackupRef:
    """One backup of drwatch's catalogue as a playbook sees it (at one location).
    For a volume snapshot, `resource` is the provider's snapshot id."""

    backup_id: str
    data_class: str
    kind: str  # volume_snapshot | dump
    location: str
    created_at: float  # the data's time
    state: str  # verified | corrupt | missing | pending | failed
    why: str = ""
    resource: str = ""

    @property
    def snapshot_id(self) -> str:
        return self.resource or self.backup_id


class BackupCatalogue(Protocol):
    """drwatch's catalogue of verified backups, for the database ladder (rungs 4 to 6).

    The watcher's private key, when it holds one, stays behind this seam: a playbook gets
    the plaintext stream of a dump, decrypted on the watcher, never the key."""

    def snapshots(self, group: str) -> Sequence[BackupRef] | None:
        """The group's volume snapshots at the primary location, newest first, in every
        state; None when the catalogue does not track them (the ladder then lists the
        provider's snapshots, as without backups)."""

    def dumps(self, group: str) -> Sequence[BackupRef]:
        """The group's verified dumps, newest first (every location)."""

    def mark_bad(self, ref: BackupRef, why: str) -> None:
        """A backup the catalogue had verified proved bad when restored: record it."""

    def key_missing(self) -> str | None:
        """Why the watcher cannot decrypt a dump (no private key), or None when it can."""

    def plaintext(self, ref: BackupRef) -> AsyncGenerator[bytes]:
        """The dump's plaintext, checked against its manifest and decrypted in memory
        (an async generator: close it to stop gpg and remove its key home at once)."""


class NoBackups:
    """The catalogue when `[backup]` is not configured: the ladder behaves as before."""

    def snapshots(self, group: str) -> Sequence[BackupRef] | None:
        return None

    def dumps(self, group: str) -> Sequence[BackupRef]:
        return ()

    def mark_bad(self, ref: BackupRef, why: str) -> None:
        return None

    def key_missing(self) -> str | None:
        return "backups are not configured ([backup])"

    async def plaintext(self, ref: BackupRef) -> AsyncGenerator[bytes]:
        nothing: tuple[bytes, ...] = ()
        for block in nothing:  # an async generator like the real one, that yields nothing
            yield block
        raise DrwatchError("backups are not configured ([backup])")


class DumpRestore(Protocol):
    """Streams a dump's plaintext into a new database host over the agent's authenticated,
    encrypted channel (drwatch.agent: TLS, requests signed for that instance)."""

    async def restore(
        self, instance: Instance, backup_id: str, stream: AsyncIterator[bytes]
    ) -> JSON: ...

    async def restored(self, instance: Instance, backup_id: str) -> JSON | None:
        """What the host says of a restore of `backup_id` it finished, or None."""

    def missing(self) -> str | None:
        """Why dumps cannot be streamed into a host here, or None when they can."""


class NoDumpRestore:
    """No channel into a new host for a dump's plaintext: rung 6 is skipped, saying so."""

    def missing(self) -> str | None:
        return (
            "this build has no channel to stream a dump into a new database host "
            '(restore it by hand: docs/backups.md, "Restoring")'
        )

    async def restore(
        self, instance: Instance, backup_id: str, stream: AsyncIterator[bytes]
    ) -> JSON:
        raise DrwatchError("restoring a dump into a host is not wired in this daemon")

    async def restored(self, instance: Instance, backup_id: str) -> JSON | None:
        return None


class Approvals(Protocol):
    """An operator's approval for one gated step of a running incident's playbook."""

    def request(self, incident_id: str, what: str, now: float) -> None:
        """Say the run waits (the status page and the approve API show it)."""

    def approved(self, incident_id: str, what: str) -> str | None:
        """Who approved `what` for the incident, or None while nobody has."""


class NoApprovals:
    """Without an operator channel, a gated step never gets its approval."""

    def request(self, incident_id: str, what: str, now: float) -> None:
        return None

    def approved(self, incident_id: str, what: str) -> str | None:
        return None


@dataclass(frozen=True, slots=True)
class Deps:
    """Everything a playbook may touch, handed in by the composition root."""

    provider: Provider
    fleet: FleetView
    agent: AgentActions
    groups: Mapping[str, GroupInfo]
    settings: ActSettings = ActSettings()
    clock: Clock = field(default_factory=SystemClock)
    roles: RoleMemory = field(default_factory=RoleMemory)
    region: RegionSetup = field(default_factory=RegionSetup)
    backups: BackupCatalogue = field(default_factory=NoBackups)
    dump_restore: DumpRestore = field(default_factory=NoDumpRestore)
    approvals: Approvals = field(default_factory=NoApprovals)


class StepError(DrwatchError):
    """A step cannot reach its goal; the run ends `failed` with this detail."""


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # "done" | "skipped"
    detail: str
    result: JSON


def done(detail: str, **result: Any) -> Outcome:
    return Outcome("done", detail, result)


def skipped(reason: str, **result: Any) -> Outcome:
    return Outcome("skipped", reason, result)


Check = Callable[[JSON], Awaitable[JSON | None]]
Apply = Callable[[JSON], Awaitable[JSON]]


class EffectGate(Protocol):
    """The runner's half of `ctx.effect`: journal, check, apply, journal."""

    async def effect(self, step: str, key: str, params: JSON, check: Check, apply: Apply) -> JSON:
        """Return the effect's result, applying it at most once across crashes."""

    async def recorded(self, step: str, key: str) -> JSON | None:
        """The journaled result of an effect that is done, or None."""


@dataclass
class RunContext:
    """One run of one playbook, as its steps see it."""

    run_id: str
    plan: Plan
    deps: Deps
    gate: EffectGate
    results: dict[str, JSON] = field(default_factory=dict)
    step: str = ""

    async def effect(self, key: str, params: JSON, *, check: Check, apply: Apply) -> JSON:
        """A side effect, journaled. On a resumed run `params` are the journaled ones."""
        return await self.gate.effect(self.step, key, params, check, apply)

    async def recorded(self, key: str) -> JSON | None:
        """What this step journaled under `key` on an earlier attempt, if it finished."""
        return await self.gate.recorded(self.step, key)

    async def memo(self, key: str, value: JSON) -> JSON:
        """Journal a verdict (no side effect) so a re-run of the step does not redo the work
        that led to it; returns the first value journaled under `key`."""

        async def nothing_yet(_p: JSON) -> JSON | None:
            return None

        async def keep(p: JSON) -> JSON:
            return p

        return await self.effect(key, value, check=nothing_yet, apply=keep)

    def token(self, key: str) -> str:
        """A deterministic idempotency token (EC2 ClientToken, at most 64 characters)."""
        token = f"{self.run_id}-{self.step}-{key}"
        if len(token) <= 64:
            return token
        digest = hashlib.sha256(token.encode()).hexdigest()[:24]
        return f"{self.run_id}-{digest}"

    def tags(self, key: str) -> Tags:
        """Tags that mark a resource as made by this run's step: the world-side "done?"."""
        return ((RUN_TAG, self.run_id), (STEP_TAG, f"{self.step}/{key}"))

    async def wait_for(
        self, what: str, probe: Callable[[], Awaitable[T | None]], within: float
    ) -> T:
        """Poll `probe` until it returns a value; StepError after `within` seconds."""
        clock = self.deps.clock
        try:
            async with asyncio.timeout(within):
                while True:
                    value = await probe()
                    if value is not None:
                        return value
                    await clock.sleep(self.deps.settings.poll_interval)
        except TimeoutError:
            raise StepError(f"timed out after {within:g}s waiting for {what}") from None


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    run: Callable[[RunContext], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class Playbook:
    name: PlaybookName
    steps: tuple[Step, ...]


# -- reading the fleet's health -------------------------------------------------------------


def is_up(snap: Snapshot, target: str, layer: Layer) -> bool:
    health = snap.get(target, layer)
    return health is not None and health.health is Health.UP


def database_integrity(snap: Snapshot, instance_id: str) -> bool | None:
    """True/False from the agent's integrity verdict; None when the agent has not said."""
    check = database_check(snap, instance_id)
    if check is None:
        return None
    data = check.get("data")
    value = data.get("integrity") if isinstance(data, Mapping) else None
    if value is None:
        return None
    return str(value) == "ok"


def database_role(snap: Snapshot, instance_id: str) -> str | None:
    """The role the agent reports now (lower-cased), or None when it says nothing."""
    return reported_role(snap, instance_id) or None
