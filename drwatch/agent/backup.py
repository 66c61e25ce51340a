"""The `backup` action: a dump or an archive taken on this host, encrypted here, uploaded.

The plaintext never leaves the host and never touches its disk: the source (`pg_dump`
of the local replica, `tar` of configured paths) streams into gpg, which encrypts to the
operator's public key, and the ciphertext goes to the backup bucket in chunks of
multipart uploads (drwatch.backup.pipeline, the same code the watcher uses). The host
holds the public key and write-only credentials for the backup prefix; it cannot read,
list or delete a backup (docs/backups.md, "Keys and custody"). drwatch journals the run
before it asks, reads the manifest back and verifies every chunk itself: the host's
answer is not proof.

The action is not exclusive: a dump of several minutes must not hold back a promotion
or a thaw on the same host (drwatch.agent.server's action lock).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from drwatch.agent.actions import ActionError, check_params
from drwatch.agent.config import AgentBackupConfig, PostgresConfig
from drwatch.backup.config import DEFAULT_CHUNK, Location
from drwatch.backup.dump import PgEndpoint, replica_dump
from drwatch.backup.errors import BackupError
from drwatch.backup.gpg import Recipient
from drwatch.backup.manifest import Manifest
from drwatch.backup.pipeline import Pipeline, Target, command_stream
from drwatch.backup.source import Source
from drwatch.backup.store import S3Store
from drwatch.logs import get_logger

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,120}$")
PARAMS = frozenset({"backup_id", "data_class", "kind", "created_at"})
log = get_logger(component="agent.backup")

# Makes the plaintext stream of one kind on this host (it may refuse: ActionError).
SourceMaker = Callable[[], Awaitable[Source]]


@dataclass(frozen=True)
class UploadSettings:
    """Where this host uploads and to whom it encrypts (the agent's `[backup]`)."""

    location: Location
    public_key_file: Path
    fingerprint: str
    gnupg_home: Path  # scratch: gpg reads the public key file here, no keyring kept
    gpg_binary: str = "gpg"
    compression: str = "none"
    chunk_size: int = DEFAULT_CHUNK


class BackupAction:
    """`backup` with backup_id, data_class, kind (`dump` | `config_archive`), created_at."""

    exclusive = False

    def __init__(self, settings: UploadSettings, sources: Mapping[str, SourceMaker]) -> None:
        self._settings = settings
        self._sources = dict(sources)
        self._recipient: Recipient | None = None

    async def __call__(self, params: dict[str, str]) -> dict[str, object]:
        check_params(params, PARAMS)
        backup_id, data_class, kind, created_at = _parse(params)
        make = self._sources.get(kind)
        if make is None:
            raise ActionError(f"this host takes no {kind} backups", status=400)
        try:
            recipient = await self._load_recipient(created_at)
            source = await make()
            target = Target(
                data_class, kind, self._settings.location.prefix, source.identity,
                source.consistent_at,
            )  # fmt: skip
            manifest = await self._upload(recipient, source, target, backup_id, created_at)
        except BackupError as err:
            log.warning("backup.failed", backup=backup_id, kind=kind, error=str(err))
            raise ActionError(f"backup {backup_id}: {err}") from None
        log.info("backup.uploaded", backup=backup_id, kind=kind, bytes=manifest.size)
        return {
            "backup_id": backup_id,
            "bucket": self._settings.location.bucket,
            "chunks": len(manifest.chunks),
            "bytes": manifest.size,
            "plain_bytes": manifest.plain_bytes,
        }

    async def _load_recipient(self, now: float) -> Recipient:
        """The public key, checked once (a wrong or expired key: a clear error, no upload)."""
        s = self._settings
        if self._recipient is None:
            self._recipient = await Recipient.load(
                s.gpg_binary, s.public_key_file, s.fingerprint, s.gnupg_home, now=now
            )
        return self._recipient

    async def _upload(
        self,
        recipient: Recipient,
        source: Source,
        target: Target,
        backup_id: str,
        created_at: float,
    ) -> Manifest:
        s = self._settings
        pipeline = Pipeline(recipient, compression=s.compression, chunk_size=s.chunk_size)
        async with S3Store("primary", s.location) as store:
            return await pipeline.run(
                source.stream,
                store,
                target,
                now=created_at,
                backup_id=backup_id,
                expected_size=source.expected_size,
            )


def _parse(params: Mapping[str, str]) -> tuple[str, str, str, float]:
    for key in PARAMS:
        value = params.get(key, "")
        if key != "created_at" and not _ID.match(value):
            raise ActionError(f"{key}: {value[:64]!r} is not [A-Za-z0-9_.:-]{{1,120}}", status=400)
    try:
        created_at = float(params["created_at"])
    except (KeyError, ValueError):
        raise ActionError("created_at: expected epoch seconds", status=400) from None
    return params["backup_id"], params["data_class"], params["kind"], created_at


def build_backup_action(cfg: AgentBackupConfig, pg: PostgresConfig | None) -> BackupAction:
    """The `backup` action a real agent runs, from its `[backup]` (and `[postgres]`)."""
    sources: dict[str, SourceMaker] = {}
    if cfg.dump and pg is not None:
        endpoint = PgEndpoint(pg.host, pg.port, pg.user, pg.database)

        async def dump() -> Source:
            return await replica_dump(endpoint)

        sources["dump"] = dump
    if cfg.archive_paths:
        argv = ["tar", "-C", "/", "-czf", "-", *(p.lstrip("/") for p in cfg.archive_paths)]

        async def archive() -> Source:
            when = {"time": datetime.now(UTC).isoformat(timespec="seconds")}
            return Source(command_stream(argv), {"host": socket.gethostname(),
                          "paths": ",".join(cfg.archive_paths)}, when)  # fmt: skip

        sources["config_archive"] = archive
    settings = UploadSettings(
        location=cfg.location,
        public_key_file=cfg.public_key_file,
        fingerprint=cfg.fingerprint,
        gnupg_home=cfg.gnupg_home,
        gpg_binary=cfg.gpg_binary,
        compression=cfg.compression,
        chunk_size=cfg.chunk_size,
    )
    return BackupAction(settings, sources)
