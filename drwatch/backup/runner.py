"""One backup run, end to end, and what keeps the catalogue honest between runs.

`run_stream`: the run is recorded before it starts (pending, no manifest: "running"),
uploaded to the primary location through the pipeline, verified there, copied to
every other location and verified at each on its own. Every outcome is a catalogue
row: verified, corrupt, missing, or failed with the reason. `resume` (at start) turns
runs a crash interrupted into failed ones and aborts their orphaned multipart uploads;
`reverify` checks verified backups again, so later damage shows as corrupt.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from drwatch.backup.catalogue import Catalogue, Entry
from drwatch.backup.config import LocationName
from drwatch.backup.errors import BackupError
from drwatch.backup.manifest import MANIFEST_NAME, Manifest, new_backup_id, object_prefix
from drwatch.backup.model import State
from drwatch.backup.pipeline import Pipeline, Target
from drwatch.backup.source import Source
from drwatch.backup.store import ObjectStore
from drwatch.backup.verify import copy, verify

Clock = Callable[[], float]
# Makes a backup elsewhere: (backup_id, created_at) -> when uploaded.
Produce = Callable[[str, float], Awaitable[object]]
# Kinds whose catalogue entries point at provider resources, not objects (their own
# source checks them again).
EXTERNAL_KINDS = frozenset({"volume_snapshot", "image"})
INTERRUPTED = "interrupted: drwatch stopped during the run"


def _log() -> Any:
    return structlog.get_logger("drwatch.backup")


@dataclass(frozen=True)
class Place:
    """A location as the runner uses it: its store and the prefix under which it keeps
    drwatch's backups."""

    store: ObjectStore
    root: str


class BackupRunner:
    """Runs backups for every class into the configured places (primary first)."""

    def __init__(
        self,
        catalogue: Catalogue,
        places: Mapping[str, Place],
        pipeline: Pipeline,
        key_ids: frozenset[str],
        clock: Clock,
    ) -> None:
        if LocationName.PRIMARY not in places:
            raise ValueError("the primary location is required")
        self._catalogue = catalogue
        self._places = dict(places)
        self._pipeline = pipeline
        self._key_ids = key_ids
        self._clock = clock
        # Deletes what an external entry names (drwatch.backup.fleet sets it).
        self.delete_external: Callable[[Entry], Awaitable[None]] | None = None

    async def run_stream(self, data_class: str, kind: str, source: Source) -> list[Entry]:
        """Back up one stream; the catalogue entries it made, one per location."""
        now = self._clock()
        backup_id = new_backup_id(data_class, now, secrets.token_hex(2))
        running = Entry(backup_id, data_class, kind, LocationName.PRIMARY, now, State.PENDING)
        self._catalogue.record(running)
        primary = self._places[LocationName.PRIMARY]
        target = Target(data_class, kind, primary.root, source.identity, source.consistent_at)
        try:
            manifest = await self._pipeline.run(
                source.stream,
                primary.store,
                target,
                now=now,
                backup_id=backup_id,
                expected_size=source.expected_size,
            )
        except (BackupError, OSError) as err:  # OSError: a command that cannot start
            _log().error("backup.failed", backup=backup_id, data_class=data_class, error=str(err))
            return self._failed_everywhere(running, str(err))
        return await self._finish(running, manifest)

    async def run_remote(self, data_class: str, kind: str, produce: Produce) -> list[Entry]:
        """A backup another host encrypts and uploads (the agent on a database host, so
        the plaintext never leaves it). Journaled before it starts like any run;
        `produce(backup_id, created_at)` returns once the host has uploaded it. The
        manifest that counts is the one read back from the primary location, never the
        host's word; a run that fails has its objects deleted here, with drwatch's own
        credentials (the host's can only write)."""
        now = self._clock()
        backup_id = new_backup_id(data_class, now, secrets.token_hex(2))
        running = Entry(backup_id, data_class, kind, LocationName.PRIMARY, now, State.PENDING)
        self._catalogue.record(running)
        primary = self._places[LocationName.PRIMARY]
        try:
            await produce(backup_id, now)
            manifest = await read_manifest(primary.store, primary.root, running)
        except (BackupError, OSError) as err:
            _log().error("backup.failed", backup=backup_id, data_class=data_class, error=str(err))
            try:
                await _clean(primary, [running])
            except BackupError as clean_err:
                _log().warning("backup.cleanup_failed", backup=backup_id, error=str(clean_err))
            return self._failed_everywhere(running, str(err))
        return await self._finish(running, manifest)

    def record_external(self, entries: list[Entry]) -> list[Entry]:
        """Record entries a source checked itself (volume snapshots, images)."""
        for entry in entries:
            self._catalogue.record(entry)
        return entries

    async def _finish(self, running: Entry, manifest: Manifest) -> list[Entry]:
        """Verify at the primary, then copy to every other location and verify there."""
        entry = self._check(await self._verified(running, manifest, LocationName.PRIMARY))
        entries = [entry]
        for name in self._places:
            if name != LocationName.PRIMARY:
                entries.append(await self._copy_to(name, entry, manifest))
        return entries

    def failed_to_start(self, data_class: str, kind: str, why: str) -> list[Entry]:
        """Record a run that could not even start (no source): failed everywhere."""
        now = self._clock()
        backup_id = new_backup_id(data_class, now, secrets.token_hex(2))
        running = Entry(backup_id, data_class, kind, LocationName.PRIMARY, now, State.PENDING)
        _log().error("backup.failed", backup=backup_id, data_class=data_class, error=why)
        return self._failed_everywhere(running, why)

    def _failed_everywhere(self, running: Entry, why: str) -> list[Entry]:
        out = []
        for name in self._places:
            reason = why if name == LocationName.PRIMARY else f"not copied: {why}"
            entry = Entry(
                running.backup_id,
                running.data_class,
                running.kind,
                name,
                running.created_at,
                State.FAILED,
                reason,
                checked_at=self._clock(),
            )
            self._catalogue.record(entry)
            out.append(entry)
        return out

    async def _verified(self, entry: Entry, manifest: Manifest, location: str) -> Entry:
        """The entry at `location` after verifying it there (pending if unreachable)."""
        place = self._places[location]
        base = Entry(
            entry.backup_id,
            entry.data_class,
            entry.kind,
            location,
            entry.created_at,
            State.PENDING,
            size=manifest.size,
            manifest=manifest,
        )
        try:
            verdict = await verify(place.store, manifest, place.root, self._key_ids)
        except BackupError as err:
            return base.checked(State.PENDING, f"not checked: {err}", self._clock())
        return base.checked(verdict.state, verdict.why, self._clock())

    async def _copy_to(self, location: str, source: Entry, manifest: Manifest) -> Entry:
        if source.state is not State.VERIFIED:
            why = f"not copied: the primary copy is {source.state.value}"
            failed = Entry(
                source.backup_id,
                source.data_class,
                source.kind,
                location,
                source.created_at,
                State.FAILED,
                why,
                checked_at=self._clock(),
            )
            return self._check(failed)
        primary, dest = self._places[LocationName.PRIMARY], self._places[location]
        try:
            await copy(primary.store, dest.store, manifest, primary.root, dest.root)
        except BackupError as err:
            _log().error("backup.copy_failed", backup=source.backup_id, to=location, error=str(err))
            failed = Entry(
                source.backup_id,
                source.data_class,
                source.kind,
                location,
                source.created_at,
                State.FAILED,
                f"copy failed: {err}",
                checked_at=self._clock(),
            )
            return self._check(failed)
        return self._check(await self._verified(source, manifest, location))

    def _check(self, entry: Entry) -> Entry:
        self._catalogue.record(entry)
        return entry

    async def reverify(
        self, older_than: float, recent: Mapping[str, float] | None = None
    ) -> list[Entry]:
        """Check again, when last checked before `older_than`, the backups the RPO rests
        on (the newest verified per class, kind and location, and every verified one
        whose data is younger than `recent[class]`, the class's RPO: the RPO falls back
        on those when the newest turns bad) and any left pending; the entries whose state
        changed. Reading every retained backup each time would download them all every
        pass; older ones are checked once they are the newest verified."""
        changed = []
        now = self._clock()
        for entry in _due(self._catalogue.entries(), older_than, recent or {}, now):
            if entry.kind in EXTERNAL_KINDS:
                continue
            if entry.manifest is None or entry.location not in self._places:
                continue
            after = await self._verified(entry, entry.manifest, entry.location)
            if after.state is State.PENDING and entry.state is State.VERIFIED:
                continue  # unreachable now: keep what we knew, the RPO ages on its own
            self._catalogue.record(after)
            if after.state is not entry.state:
                _log().warning(
                    "backup.state_changed",
                    backup=entry.backup_id,
                    location=entry.location,
                    was=entry.state.value,
                    now=after.state.value,
                    why=after.why,
                )
                changed.append(after)
        return changed

    async def prune(self, doomed: list[Entry]) -> list[Entry]:
        """Delete these backups' objects at their location and forget them; the ones
        done. A location that fails keeps its backups until the next pass."""
        done = []
        for entry in doomed:
            if entry.kind in EXTERNAL_KINDS:
                if await self._drop_external(entry):
                    done.append(entry)
                continue
            place = self._places.get(entry.location)
            if place is None:
                continue
            prefix = object_prefix(place.root, entry.data_class, entry.kind, entry.backup_id)
            try:
                for key in await place.store.keys(prefix):
                    await place.store.delete(key)
            except BackupError as err:
                _log().warning("backup.prune_failed", backup=entry.backup_id, error=str(err))
                continue
            self._catalogue.forget(entry.backup_id, entry.location)
            done.append(entry)
        if done:
            _log().info("backup.pruned", count=len(done))
        return done

    async def _drop_external(self, entry: Entry) -> bool:
        """A snapshot's or an image's entry: its resource deleted by the hook its source
        set (a catalogue row of an image check only goes: images are never deleted)."""
        try:
            if self.delete_external is not None:
                await self.delete_external(entry)
        except BackupError as err:
            _log().warning("backup.prune_failed", backup=entry.backup_id, error=str(err))
            return False
        self._catalogue.forget(entry.backup_id, entry.location)
        return True

    async def resume(self) -> list[Entry]:
        """At start: runs a crash interrupted become failed (their objects deleted), and
        every multipart upload left open under drwatch's prefixes is aborted: nothing
        half-counted, nothing orphaned."""
        stale = [
            e for e in self._catalogue.entries() if e.state is State.PENDING and e.manifest is None
        ]
        interrupted = [f for e in stale for f in self._failed_everywhere(e, INTERRUPTED)]
        for name, place in self._places.items():
            try:
                await _clean(place, stale)
            except BackupError as err:
                _log().warning("backup.resume_failed", location=name, error=str(err))
        return interrupted


def _due(
    entries: list[Entry], older_than: float, recent: Mapping[str, float], now: float
) -> list[Entry]:
    newest: dict[tuple[str, str, str], Entry] = {}
    others = []
    for e in entries:  # newest first
        if e.state is State.PENDING:
            others.append(e)
        elif e.state is State.VERIFIED:
            key = (e.data_class, e.kind, e.location)
            if key not in newest:
                newest[key] = e
            elif now - e.created_at < recent.get(e.data_class, 0.0):
                others.append(e)
    return [
        e for e in [*newest.values(), *others] if e.checked_at is None or e.checked_at < older_than
    ]


async def _clean(place: Place, stale: list[Entry]) -> None:
    for entry in stale:
        prefix = object_prefix(place.root, entry.data_class, entry.kind, entry.backup_id)
        for key in await place.store.keys(prefix):
            await place.store.delete(key)
    for key, upload_id in await place.store.open_uploads(place.root):
        await place.store.abort_multipart(key, upload_id)
        _log().warning("backup.orphan_aborted", store=place.store.name, key=key)


async def read_manifest(store: ObjectStore, root: str, running: Entry) -> Manifest:
    """The manifest a host uploaded for `running`, checked against what was asked."""
    key = object_prefix(root, running.data_class, running.kind, running.backup_id) + MANIFEST_NAME
    raw = b"".join([data async for data in store.read(key, 1024 * 1024)])
    try:
        manifest = Manifest.from_json(raw)
    except (ValueError, KeyError, TypeError) as err:
        raise BackupError(f"{key}: not a manifest ({err})") from None
    asked = (running.backup_id, running.data_class, running.kind)
    if (manifest.backup_id, manifest.data_class, manifest.kind) != asked:
        raise BackupError(f"{key}: the manifest names another backup than the one asked for")
    return manifest
