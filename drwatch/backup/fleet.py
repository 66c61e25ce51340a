"""Where each class's backups are taken: the fleet's hosts, through their agents and the
provider. These are the daemon's real sources (the producers `BackupService.jobs` runs).

- `volume_snapshot`: the primary's agent freezes the database (`freeze`), the provider
  starts a snapshot of its data volume, the agent thaws at once (`thaw`, in a `finally`;
  the agent also thaws by itself after its `max_freeze`). The measured freeze time goes
  in the entry. The snapshot is verified `completed`, copied to the standby region and
  verified there on its own.
- `dump`: a replica's agent (never the primary's) runs `pg_dump`, encrypts and uploads it
  (`backup` action, drwatch.agent.backup); drwatch verifies what it finds in the bucket.
- `config_archive`: the same, an archive of each host of the class's groups.
- `image` (the fixed class): each group's machine image present in every region; a
  missing one is copied there (`pending` until the copy is available: a warning).

Every run is journaled before its first side effect (a pending catalogue row); a crash
halfway leaves a row `resume` turns into failed, never a half-counted backup.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from drwatch.backup.catalogue import Entry
from drwatch.backup.config import BackupKind, DataClass, LocationName
from drwatch.backup.errors import BackupError
from drwatch.backup.jobs import Job
from drwatch.backup.manifest import Manifest, new_backup_id
from drwatch.backup.model import State
from drwatch.backup.service import BackupService, Producer
from drwatch.errors import DrwatchError
from drwatch.model.fleet import Fleet, Instance, InstanceState
from drwatch.providers.base import ImageInfo, SnapshotInfo, VolumeInfo

Clock = Callable[[], float]
BACKUP_TAG = "drwatch:backup"
CLASS_TAG = "drwatch:data-class"
ROOT_DEVICES = frozenset({"/dev/sda1", "/dev/xvda", "/dev/sda", "/dev/nvme0n1"})
DUMP_TIMEOUT_S = 3600.0
ACTION_TIMEOUT_S = 30.0
POLL_S = 0.5
READY_S = 30.0


def _log() -> Any:
    return structlog.get_logger("drwatch.backup")


class Agents(Protocol):
    """The agent client's action call (drwatch.observe.agent.AgentClient)."""

    async def action(
        self, instance: Instance, name: str, params: Mapping[str, str], timeout_s: float = ...
    ) -> dict[str, object]: ...


class Cloud(Protocol):
    """What the sources ask of the provider (drwatch.providers.aws.AwsProvider)."""

    async def volumes(self, region: str) -> list[VolumeInfo]: ...
    async def snapshots(self, region: str) -> list[SnapshotInfo]: ...
    async def images(self, region: str) -> list[ImageInfo]: ...
    async def create_snapshot(
        self, region: str, volume_id: str, tags: tuple[tuple[str, str], ...]
    ) -> str: ...
    async def copy_snapshot(
        self,
        region: str,
        source_region: str,
        snapshot_id: str,
        tags: tuple[tuple[str, str], ...],
    ) -> str: ...
    async def delete_snapshot(self, region: str, snapshot_id: str) -> None: ...
    async def copy_image(
        self, region: str, source_region: str, image_id: str, name: str, client_token: str
    ) -> str: ...


@dataclass(frozen=True)
class FleetDeps:
    """The daemon's live view and adapters, handed in by the composition root."""

    fleet: Callable[[], Fleet]
    role: Callable[[str], str | None]  # a database's last reported role ("primary"/"replica")
    agents: Agents
    cloud: Cloud
    regions: tuple[str, ...]
    standby_region: str | None
    snapshot_timeout: float = 300.0
    image_every: float = 60.0


class FleetSources:
    """The producers of every kind (see the module doc)."""

    def __init__(self, deps: FleetDeps, clock: Clock = time.time) -> None:
        self._d = deps
        self._clock = clock

    def producers(self) -> dict[str, Producer]:
        return {
            BackupKind.DUMP.value: self.dump,
            BackupKind.CONFIG_ARCHIVE.value: self.archive,
            BackupKind.VOLUME_SNAPSHOT.value: self.snapshot,
        }

    def image_jobs(self, service: BackupService) -> list[Job]:
        """The fixed classes' image checks, as often as `image_every`."""
        service.runner_hook(self.delete_external)
        out = []
        for name, dc in service.cfg.classes.items():
            if dc.kind.value == "fixed":

                async def run(name: str = name, dc: DataClass = dc) -> object:
                    return await self.images(service, name, dc)

                out.append(Job(name, BackupKind.IMAGE.value, self._d.image_every, run))
        return out

    # --- hosts -------------------------------------------------------------------------

    def _hosts(self, groups: Iterable[str]) -> list[Instance]:
        fleet = self._d.fleet()
        return [i for g in groups for i in fleet.in_group(g) if i.state is InstanceState.RUNNING]

    def _database(self, groups: Iterable[str], role: str) -> Instance | None:
        found = [i for i in self._hosts(groups) if self._d.role(i.id) == role]
        home = self._d.regions[0] if self._d.regions else None
        found.sort(key=lambda i: (i.region != home, i.name))  # the home region first
        return found[0] if found else None

    # --- dumps and archives ---------------------------------------------------------------

    async def dump(self, service: BackupService, data_class: str, dc: DataClass) -> list[Entry]:
        kind = BackupKind.DUMP.value
        await self._wait_for(lambda: self._database(dc.groups, "replica"))
        replica = self._database(dc.groups, "replica")
        if replica is None:
            why = "no running replica to dump from (a dump never runs on the primary)"
            return service.failed(data_class, kind, why)
        produce = self._on(replica, data_class, kind, DUMP_TIMEOUT_S)
        return await service.run_remote(data_class, kind, produce)

    async def archive(self, service: BackupService, data_class: str, dc: DataClass) -> list[Entry]:
        kind = BackupKind.CONFIG_ARCHIVE.value
        await self._wait_for(lambda: self._hosts(dc.groups))
        hosts = self._hosts(dc.groups)
        if not hosts:
            return service.failed(data_class, kind, "no running host in the class's groups")
        entries: list[Entry] = []
        for host in hosts:
            produce = self._on(host, data_class, kind, DUMP_TIMEOUT_S)
            entries += await service.run_remote(data_class, kind, produce)
        return entries

    def _on(
        self, host: Instance, data_class: str, kind: str, timeout_s: float
    ) -> Callable[[str, float], Any]:
        """Asks `host`'s agent to take, encrypt and upload one backup."""

        async def produce(backup_id: str, created_at: float) -> object:
            params = {
                "backup_id": backup_id,
                "data_class": data_class,
                "kind": kind,
                "created_at": repr(created_at),
            }
            try:
                return await self._d.agents.action(host, "backup", params, timeout_s)
            except DrwatchError as err:
                raise BackupError(f"{host.name or host.id}: {err}") from None

        return produce

    # --- volume snapshots -----------------------------------------------------------------

    async def snapshot(self, service: BackupService, data_class: str, dc: DataClass) -> list[Entry]:
        kind = BackupKind.VOLUME_SNAPSHOT.value
        await self._recheck(service, data_class)
        await self._sweep(service, data_class)
        await self._wait_for(lambda: self._database(dc.groups, "primary"))
        primary = self._database(dc.groups, "primary")
        started = time.monotonic()
        now = self._clock()
        backup_id = new_backup_id(data_class, now, secrets.token_hex(2))
        running = Entry(backup_id, data_class, kind, LocationName.PRIMARY, now, State.PENDING)
        service.record([running], 0.0)  # journaled before the freeze
        try:
            if primary is None:
                raise BackupError("no running primary to snapshot")
            entries = await self._snapshot(primary, running)
        except (BackupError, DrwatchError) as err:
            _log().error("backup.failed", backup=backup_id, data_class=data_class, error=str(err))
            failed = [_bad(running, loc, str(err), self._clock()) for loc in self._snap_locations()]
            return service.record(failed, time.monotonic() - started)
        return service.record(entries, time.monotonic() - started)

    def _snap_locations(self) -> list[str]:
        """Where snapshots live: the home region, and the standby region's copy."""
        standby = [LocationName.STANDBY_REGION.value] if self._d.standby_region else []
        return [LocationName.PRIMARY.value, *standby]

    async def _snapshot(self, primary: Instance, running: Entry) -> list[Entry]:
        volume = await self._data_volume(primary)
        tags = (
            ("Name", f"{_name(volume)}-backup-{_stamp(running.created_at)}"),
            (BACKUP_TAG, running.backup_id),
            (CLASS_TAG, running.data_class),
        )
        snap_id, frozen = await self._frozen_snapshot(primary, volume, running.backup_id, tags)
        facts = {
            "snapshot_id": snap_id,
            "region": volume.region,
            "volume_id": volume.id,
            "instance": primary.name or primary.id,
        }
        at = {"time": _iso(running.created_at), **frozen}
        first = await self._completed(running, LocationName.PRIMARY, volume.region, snap_id)
        entries = [_with(first, facts, at)]
        standby = self._d.standby_region
        if standby is None or standby == volume.region:
            return entries
        if first.state is not State.VERIFIED:
            return [*entries, _not_copied(running, first)]
        try:
            copy_id = await self._d.cloud.copy_snapshot(standby, volume.region, snap_id, tags)
            copied = await self._completed(running, LocationName.STANDBY_REGION, standby, copy_id)
        except DrwatchError as err:
            why = f"copy failed: {err}"
            copied = _bad(running, LocationName.STANDBY_REGION, why, self._clock())
            copy_id = ""
        entries.append(_with(copied, {**facts, "snapshot_id": copy_id, "region": standby}, at))
        return entries

    async def _frozen_snapshot(
        self,
        primary: Instance,
        volume: VolumeInfo,
        backup_id: str,
        tags: tuple[tuple[str, str], ...],
    ) -> tuple[str, dict[str, str]]:
        """Freeze, start the snapshot, thaw at once; (snapshot id, the freeze's facts)."""
        agents = self._d.agents
        frozen = await agents.action(primary, "freeze", {"label": backup_id}, ACTION_TIMEOUT_S)
        started = time.monotonic()
        thawed: dict[str, object] = {}
        try:
            snap_id = await self._d.cloud.create_snapshot(volume.region, volume.id, tags)
        finally:
            try:
                thawed = await agents.action(primary, "thaw", {}, ACTION_TIMEOUT_S)
            except DrwatchError as err:  # the agent thaws by itself after max_freeze
                _log().error("backup.thaw_failed", backup=backup_id, error=str(err))
        measured = time.monotonic() - started
        freeze_s = thawed.get("frozen_s", measured)
        _log().info("backup.frozen", backup=backup_id, freeze_s=freeze_s)
        facts = {"freeze_s": str(freeze_s)}
        for key in ("start_lsn", "stop_lsn"):
            value = thawed.get(key, frozen.get(key))
            if value is not None:
                facts[key] = str(value)
        return snap_id, facts

    async def _data_volume(self, instance: Instance) -> VolumeInfo:
        vols = [
            v
            for v in await self._d.cloud.volumes(instance.region)
            if v.attached_to == instance.id and v.device not in ROOT_DEVICES
        ]
        if not vols:
            raise BackupError(f"{instance.name or instance.id} has no data volume attached")
        vols.sort(key=lambda v: (not _name(v).endswith("-data"), v.id))
        return vols[0]

    async def _completed(self, running: Entry, location: str, region: str, snap_id: str) -> Entry:
        """The snapshot's entry once the provider says `completed` (verified), `error`
        (corrupt), gone (missing), or still pending at the deadline."""
        deadline = time.monotonic() + self._d.snapshot_timeout
        while True:
            state = await self._state(region, snap_id)
            if state in ("completed", "error", None) or time.monotonic() > deadline:
                break
            await asyncio.sleep(POLL_S)
        verdict = {
            "completed": (State.VERIFIED, f"snapshot {snap_id} completed in {region}"),
            "error": (State.CORRUPT, f"snapshot {snap_id} failed in {region}"),
            None: (State.MISSING, f"snapshot {snap_id} is not in {region}"),
        }.get(state, (State.PENDING, f"snapshot {snap_id} still {state} in {region}"))
        base = Entry(running.backup_id, running.data_class, running.kind, location,
                     running.created_at, State.PENDING)  # fmt: skip
        return base.checked(verdict[0], verdict[1], self._clock())

    async def _state(self, region: str, snap_id: str) -> str | None:
        snaps = await self._d.cloud.snapshots(region)
        return next((s.state for s in snaps if s.id == snap_id), None)

    async def _recheck(self, service: BackupService, data_class: str) -> None:
        """The newest verified snapshot at each location still exists and is completed
        (later damage, or a snapshot deleted by hand, shows before the RPO rests on it);
        a snapshot still pending when its run gave up waiting gets its verdict now."""
        due: dict[tuple[str, str], Entry] = {}
        for e in service.catalogue.entries():
            if e.data_class != data_class or e.kind != BackupKind.VOLUME_SNAPSHOT.value:
                continue
            if e.state is State.VERIFIED:
                due.setdefault((e.location, "newest"), e)
            elif e.state is State.PENDING and e.manifest is not None:
                due[(e.location, e.backup_id)] = e
        changed = []
        for entry in due.values():
            src = entry.manifest.source if entry.manifest else {}
            try:
                state = await self._state(src.get("region", ""), src.get("snapshot_id", ""))
            except DrwatchError:
                continue  # unreachable now: keep what we knew
            verdict = _snapshot_verdict(state, src.get("snapshot_id", ""))
            if verdict is not None and verdict[0] is not entry.state:
                changed.append(entry.checked(verdict[0], verdict[1], self._clock()))
        if changed:
            service.record(changed, 0.0)

    async def _sweep(self, service: BackupService, data_class: str) -> None:
        """Snapshots drwatch started whose run does not count (drwatch stopped between
        the snapshot and its catalogue row, or the run failed after it): deleted, so
        none is left orphaned. Counted ones (verified, or still pending) stay."""
        counted = {
            e.backup_id
            for e in service.catalogue.entries()
            if e.kind == BackupKind.VOLUME_SNAPSHOT.value
            and e.state in (State.VERIFIED, State.PENDING)
        }
        regions = [
            self._d.regions[0],
            *([self._d.standby_region] if self._d.standby_region else []),
        ]
        for region in dict.fromkeys(regions):
            try:
                for snap in await self._d.cloud.snapshots(region):
                    tags = dict(snap.tags)
                    ours = tags.get(BACKUP_TAG)
                    if ours and tags.get(CLASS_TAG) == data_class and ours not in counted:
                        await self._d.cloud.delete_snapshot(region, snap.id)
                        _log().warning("backup.orphan_deleted", snapshot=snap.id, backup=ours)
            except DrwatchError as err:
                _log().warning("backup.sweep_failed", region=region, error=str(err))

    async def delete_external(self, entry: Entry) -> None:
        """Retention's delete of a snapshot (images are never deleted)."""
        if entry.kind != BackupKind.VOLUME_SNAPSHOT.value or entry.manifest is None:
            return
        src = entry.manifest.source
        if src.get("snapshot_id") and src.get("region"):
            try:
                await self._d.cloud.delete_snapshot(src["region"], src["snapshot_id"])
            except DrwatchError as err:
                raise BackupError(str(err)) from None

    # --- images -----------------------------------------------------------------------

    async def images(self, service: BackupService, data_class: str, dc: DataClass) -> list[Entry]:
        """Each image the class's groups run, by name, present in the home region
        (`primary`) and the standby region (`standby_region`); copied where missing."""
        await self._wait_for(lambda: self._hosts(dc.groups) or None)
        started, now = time.monotonic(), self._clock()
        regions = {LocationName.PRIMARY.value: self._d.regions[0]}
        if self._d.standby_region and self._d.standby_region != self._d.regions[0]:
            regions[LocationName.STANDBY_REGION.value] = self._d.standby_region
        try:
            found = {r: await self._d.cloud.images(r) for r in {*regions.values()}}
        except DrwatchError as err:
            running = Entry(f"{data_class}-{_stamp(now)}", data_class, BackupKind.IMAGE.value,
                            LocationName.PRIMARY, now, State.PENDING)  # fmt: skip
            bad = [_bad(running, loc, f"images not listed: {err}", now) for loc in regions]
            return service.record(bad, time.monotonic() - started)
        by_id = {i.id: i for imgs in found.values() for i in imgs}
        groups: dict[str, set[str]] = {}
        for i in self._hosts(dc.groups):
            if i.image_id in by_id:
                groups.setdefault(by_id[i.image_id].name, set()).add(i.group)
        names = sorted(groups)
        # A copy's pending entry is superseded by every later check of that image.
        for e in service.catalogue.entries(data_class):
            if e.kind == BackupKind.IMAGE.value and e.state is State.PENDING:
                service.catalogue.forget(e.backup_id, e.location)
        entries = []
        for name in names:
            for location, region in regions.items():
                entry = await self._image(
                    data_class, name, location=location, region=region, found=found, now=now
                )
                entries.append(_grouped(entry, sorted(groups[name])))
        return service.record(entries, time.monotonic() - started)

    async def _image(
        self,
        data_class: str,
        name: str,
        *,
        location: str,
        region: str,
        found: Mapping[str, list[ImageInfo]],
        now: float,
    ) -> Entry:
        base = Entry(f"{data_class}-{_stamp(now)}-{name}", data_class, BackupKind.IMAGE.value,
                     location, now, State.PENDING)  # fmt: skip
        here = next((i for i in found[region] if i.name == name), None)
        if here is not None:
            facts = {"image_id": here.id, "region": region, "name": name}
            state, why = _image_verdict(here, region)
            return _with(base.checked(state, why, now), facts, {})
        source = next(
            ((r, i) for r, imgs in found.items() for i in imgs if i.name == name and r != region),
            None,
        )
        if source is None:
            return base.checked(State.MISSING, f"{name} is in no region", now)
        token = f"drwatch-{source[1].id}-{region}"
        try:
            new_id = await self._d.cloud.copy_image(region, source[0], source[1].id, name, token)
        except DrwatchError as err:
            return _bad(base, location, f"{name} missing in {region}; copy failed: {err}", now)
        _log().warning("backup.image_copy_started", image=name, to=region, copy=new_id)
        started = base.checked(State.PENDING, f"{name} missing in {region}: copy {new_id}", now)
        return _with(started, {"image_id": new_id, "region": region, "name": name}, {})

    async def _wait_for(self, ready: Callable[[], object]) -> None:
        """Until the fleet answers `ready` (right after a start, before the first
        discovery or role report), at most READY_S: then the run goes on and says why."""
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if ready():
                return
            await asyncio.sleep(POLL_S)


def _image_verdict(image: ImageInfo, region: str) -> tuple[State, str]:
    """An image found by name: verified once available; a copy still on its way is
    pending (image_copy_pending, a warning); failed or gone to the provider, failed."""
    where = f"{image.name} in {region} ({image.id})"
    if image.state == "available":
        return State.VERIFIED, where
    if image.state == "pending":
        return State.PENDING, f"{where}: copy not completed yet"
    return State.FAILED, f"{where} is {image.state}"


def _grouped(entry: Entry, groups: list[str]) -> Entry:
    """An image entry naming the groups that run the image (the finding says which)."""
    if entry.manifest is None:
        return entry
    source = {**entry.manifest.source, "groups": ",".join(groups)}
    return replace(entry, manifest=replace(entry.manifest, source=source))


def _snapshot_verdict(state: str | None, snap_id: str) -> tuple[State, str] | None:
    """A snapshot's state at the provider as a catalogue state (None: still pending)."""
    if state == "completed":
        return State.VERIFIED, f"snapshot {snap_id} completed"
    if state == "error":
        return State.CORRUPT, f"snapshot {snap_id} is in error"
    if state is None:
        return State.MISSING, f"snapshot {snap_id} is gone"
    return None


def _with(entry: Entry, source: dict[str, str], at: dict[str, str]) -> Entry:
    """The entry with a manifest naming the provider resource (no chunks: nothing to
    read; the ladder finds the snapshot id in `manifest.source`)."""
    manifest = Manifest(
        backup_id=entry.backup_id,
        data_class=entry.data_class,
        kind=entry.kind,
        created_at=entry.created_at,
        recipient_fingerprint="",
        key_ids=(),
        compression="none",
        chunks=(),
        plain_bytes=0,
        source=source,
        consistent_at=at,
    )
    return Entry(entry.backup_id, entry.data_class, entry.kind, entry.location,
                 entry.created_at, entry.state, entry.why, 0, entry.checked_at,
                 entry.verified_at, manifest)  # fmt: skip


def _bad(running: Entry, location: str, why: str, now: float) -> Entry:
    return Entry(running.backup_id, running.data_class, running.kind, location,
                 running.created_at, State.FAILED, why, checked_at=now)  # fmt: skip


def _not_copied(running: Entry, first: Entry) -> Entry:
    why = f"not copied: the primary snapshot is {first.state.value}"
    return _bad(running, LocationName.STANDBY_REGION, why, first.checked_at or 0.0)


def _name(volume: VolumeInfo) -> str:
    return dict(volume.tags).get("Name") or volume.id


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%M%S")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
