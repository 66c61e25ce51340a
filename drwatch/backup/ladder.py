"""The catalogue as the database ladder reads it (drwatch.act.base.BackupCatalogue).

Rungs 4 and 5 of `database.recover` restore volume snapshots the catalogue has verified;
rung 6 restores the newest verified dump, decrypted here on the watcher with its own
copy of the private key. The key stays in this module's `Decryptor` (a throwaway gpg
home, removed after the restore) and the plaintext goes from gpg's stdout straight to
the caller's stream: nothing of it is written to the watcher's disk.

A backup the catalogue verified that restores corrupt is marked `corrupt` with a reason
starting `database.recover`; `unrestorable` turns those into the finding
`backup_unrestorable` until a newer backup of the same class, kind and location verifies.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from pathlib import Path

from drwatch.act.base import BackupRef
from drwatch.backup.catalogue import Catalogue, Entry
from drwatch.backup.config import BackupConfig, BackupKind, ClassKind, LocationName
from drwatch.backup.errors import BackupError
from drwatch.backup.model import State
from drwatch.backup.restore import Decryptor, plaintext
from drwatch.backup.rpo import BackupFinding, Diagnosis
from drwatch.backup.runner import Place
from drwatch.backup.verify import verify

LADDER_MARK = "database.recover"
NO_KEY = "the watcher holds no private key (backup.watcher_private_key_file is not set)"


def _ref(e: Entry) -> BackupRef:
    """A snapshot's entry names its provider snapshot in `manifest.source`."""
    resource = e.manifest.source.get("snapshot_id", "") if e.manifest else ""
    return BackupRef(
        e.backup_id, e.data_class, e.kind, e.location, e.created_at, e.state.value, e.why,
        resource,
    )  # fmt: skip


class LadderCatalogue:
    """`BackupCatalogue` over the daemon's catalogue, stores and the watcher's key."""

    def __init__(
        self,
        cfg: BackupConfig,
        catalogue: Catalogue,
        places: Mapping[str, Place],
        key_ids: frozenset[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cfg = cfg
        self._catalogue = catalogue
        self._places = dict(places)
        self._key_ids = key_ids
        self._clock = clock

    def _classes(self, group: str) -> list[str]:
        return [
            name
            for name, dc in self._cfg.classes.items()
            if dc.kind is ClassKind.PERSISTENT and group in dc.groups
        ]

    def _entries(self, group: str, kind: BackupKind) -> list[Entry]:
        found = [
            e
            for name in self._classes(group)
            for e in self._catalogue.entries(name)
            if e.kind == kind.value
        ]
        # Newest first; at equal times the primary location first (the fastest to read).
        return sorted(found, key=lambda e: (-e.created_at, e.location != LocationName.PRIMARY))

    def snapshots(self, group: str) -> Sequence[BackupRef] | None:
        """None when the catalogue holds no snapshot of the group at all (no class covers
        it, or drwatch takes none): the ladder then lists the provider's, as before."""
        entries = [
            e
            for e in self._entries(group, BackupKind.VOLUME_SNAPSHOT)
            if e.location == LocationName.PRIMARY
        ]
        return [_ref(e) for e in entries] if entries else None

    def dumps(self, group: str) -> Sequence[BackupRef]:
        return [
            _ref(e)
            for e in self._entries(group, BackupKind.DUMP)
            if e.state is State.VERIFIED and e.manifest is not None
        ]

    def mark_bad(self, ref: BackupRef, why: str) -> None:
        entry = self._catalogue.get(ref.backup_id, ref.location)
        if entry is not None and entry.state is State.VERIFIED:
            self._catalogue.record(entry.checked(State.CORRUPT, why, self._clock()))

    def key_missing(self) -> str | None:
        return None if self._cfg.watcher_private_key_file is not None else NO_KEY

    async def plaintext(self, ref: BackupRef) -> AsyncGenerator[bytes]:
        """Verified again at its location right before it is read, then decrypted."""
        key = self._cfg.watcher_private_key_file
        entry = self._catalogue.get(ref.backup_id, ref.location)
        place = self._places.get(ref.location)
        if key is None:
            raise BackupError(NO_KEY)
        if entry is None or entry.manifest is None or place is None:
            raise BackupError(f"{ref.backup_id} at {ref.location} is not in the catalogue")
        verdict = await verify(place.store, entry.manifest, place.root, self._key_ids)
        if verdict.state is not State.VERIFIED:
            self._catalogue.record(entry.checked(verdict.state, verdict.why, self._clock()))
            raise BackupError(f"{ref.backup_id} is {verdict.state.value}: {verdict.why}")
        async with Decryptor(self._cfg.gpg_binary, Path(key)) as decryptor:
            async for block in plaintext(place.store, entry.manifest, place.root, decryptor):
                yield block


def unrestorable(entries: Iterable[Entry], now: float) -> list[Diagnosis]:
    """`backup_unrestorable`: a backup the catalogue had verified that the ladder found
    corrupt when it restored it, while no newer one of its class, kind and location
    has verified since. Its age counts from when it was found bad (the alert's start)."""
    newest_ok: dict[tuple[str, str, str], float] = {}
    marked: list[Entry] = []
    for e in entries:
        key = (e.data_class, e.kind, e.location)
        if e.state is State.VERIFIED:
            newest_ok[key] = max(newest_ok.get(key, e.created_at), e.created_at)
        elif e.state is State.CORRUPT and e.why.startswith(LADDER_MARK):
            marked.append(e)
    return [
        Diagnosis(
            BackupFinding.UNRESTORABLE,
            e.data_class,
            e.location,
            now - (e.checked_at if e.checked_at is not None else e.created_at),
            f"{e.data_class} at {e.location}: {e.kind} {e.backup_id} was verified but did "
            f"not restore ({e.why})",
        )
        for e in marked
        if newest_ok.get((e.data_class, e.kind, e.location), float("-inf")) < e.created_at
    ]
