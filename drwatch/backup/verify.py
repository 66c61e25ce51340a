"""Verification at one location, and copies verified at their destination on their own.

A backup is `verified` at a location only when every chunk of its manifest is there
with the manifest's size and SHA-256, and every object opens as OpenPGP ciphertext to
the configured key (drwatch.backup.openpgp). A missing chunk is `missing`; anything
else that disagrees is `corrupt`, with the reason. A store that cannot be reached is
not a verdict: `StoreError` propagates and the catalogue keeps what it knew.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import structlog

from drwatch.backup.errors import BackupError, ObjectMissingError
from drwatch.backup.manifest import MANIFEST_NAME, Chunk, Manifest
from drwatch.backup.model import State
from drwatch.backup.openpgp import HEAD_BYTES, inspect
from drwatch.backup.pipeline import READ_BLOCK, Upload, part_size_for
from drwatch.backup.store import ObjectStore


@dataclass(frozen=True)
class Verdict:
    state: State
    why: str = ""


async def verify(
    store: ObjectStore, manifest: Manifest, root: str, key_ids: frozenset[str]
) -> Verdict:
    """Check every chunk of `manifest` under `root` at `store` (see the module doc)."""
    prefix = manifest.prefix(root)
    for chunk in manifest.chunks:
        try:
            verdict = await _chunk(store, prefix + chunk.name, chunk, key_ids)
        except ObjectMissingError:
            verdict = Verdict(State.MISSING, f"{chunk.name} vanished while it was read")
        if verdict.state is not State.VERIFIED:
            structlog.get_logger("drwatch.backup").error(
                "backup.verify_failed",
                backup=manifest.backup_id,
                store=store.name,
                state=verdict.state.value,
                why=verdict.why,
            )
            return verdict
    return Verdict(State.VERIFIED, f"{len(manifest.chunks)} chunk(s), {manifest.size} bytes")


async def _chunk(store: ObjectStore, key: str, chunk: Chunk, key_ids: frozenset[str]) -> Verdict:
    size = await store.size(key)
    if size is None:
        return Verdict(State.MISSING, f"{chunk.name} is not at {store.name}")
    if size != chunk.size:
        return Verdict(
            State.CORRUPT, f"{chunk.name} is {size} bytes, the manifest says {chunk.size}"
        )
    head, digest = bytearray(), hashlib.sha256()
    async for data in store.read(key, READ_BLOCK):
        if len(head) < HEAD_BYTES:
            head += data[: HEAD_BYTES - len(head)]
        digest.update(data)
    problem = inspect(bytes(head)).addressed_to(key_ids)
    if problem is not None:
        return Verdict(State.CORRUPT, f"{chunk.name}: {problem}")
    if digest.hexdigest() != chunk.sha256:
        return Verdict(State.CORRUPT, f"{chunk.name}: SHA-256 differs from the manifest")
    return Verdict(State.VERIFIED)


async def copy(
    source: ObjectStore, dest: ObjectStore, manifest: Manifest, source_root: str, dest_root: str
) -> None:
    """Stream every chunk of `manifest` from `source` to `dest`, then the manifest.

    Only ciphertext passes through the watcher. A failure aborts the chunk's multipart
    upload and deletes the chunks already copied; the copy then counts for nothing.
    Whether the copy is good is for `verify` at `dest` to say, never assumed."""
    src, dst = manifest.prefix(source_root), manifest.prefix(dest_root)
    done: list[str] = []
    try:
        for chunk in manifest.chunks:
            upload = Upload(dest, dst + chunk.name, part_size_for(chunk.size), 2)
            try:
                await upload.pump(source.read(src + chunk.name, READ_BLOCK))
            except BaseException:
                await upload.abort()
                raise
            done.append(dst + chunk.name)
        await dest.put(dst + MANIFEST_NAME, manifest.to_json())
    except BaseException:
        await _undo(dest, done)
        raise


async def _undo(dest: ObjectStore, keys: list[str]) -> None:
    for key in keys:
        try:
            await dest.delete(key)
        except BackupError as err:
            structlog.get_logger("drwatch.backup").warning(
                "backup.cleanup_failed", key=key, error=str(err)
            )
