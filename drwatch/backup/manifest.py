"""A backup's manifest: its chunks (name, size, SHA-256 of the ciphertext), to whom it
is encrypted, and what it is a copy of (source identity and consistency point).

The manifest is stored beside the chunks (`.../manifest.json`, no secrets in it, so a
restore needs only the bucket and the private key) and in the catalogue, which is the
copy verification trusts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MANIFEST_NAME = "manifest.json"
FORMAT = 1


@dataclass(frozen=True)
class Chunk:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    backup_id: str
    data_class: str
    kind: str
    created_at: float
    recipient_fingerprint: str
    key_ids: tuple[str, ...]
    compression: str
    chunks: tuple[Chunk, ...]
    plain_bytes: int
    # What was backed up: e.g. {"system_identifier": ..., "host": ..., "database": ...}.
    source: dict[str, str] = field(default_factory=dict)
    # Where the data is consistent: e.g. {"lsn": "0/3000060"} or {"time": "..."}.
    consistent_at: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(c.size for c in self.chunks)

    def prefix(self, root: str) -> str:
        """Where this backup's objects live under a location's prefix."""
        return object_prefix(root, self.data_class, self.kind, self.backup_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "backup_id": self.backup_id,
            "data_class": self.data_class,
            "kind": self.kind,
            "created_at": self.created_at,
            "recipient_fingerprint": self.recipient_fingerprint,
            "key_ids": list(self.key_ids),
            "compression": self.compression,
            "chunks": [{"name": c.name, "size": c.size, "sha256": c.sha256} for c in self.chunks],
            "plain_bytes": self.plain_bytes,
            "source": self.source,
            "consistent_at": self.consistent_at,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True).encode()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        if d.get("format") != FORMAT:
            raise ValueError(f"manifest format {d.get('format')!r}, drwatch reads {FORMAT}")
        return cls(
            backup_id=d["backup_id"],
            data_class=d["data_class"],
            kind=d["kind"],
            created_at=float(d["created_at"]),
            recipient_fingerprint=d["recipient_fingerprint"],
            key_ids=tuple(d["key_ids"]),
            compression=d["compression"],
            chunks=tuple(Chunk(c["name"], int(c["size"]), c["sha256"]) for c in d["chunks"]),
            plain_bytes=int(d["plain_bytes"]),
            source=dict(d.get("source", {})),
            consistent_at=dict(d.get("consistent_at", {})),
        )

    @classmethod
    def from_json(cls, text: bytes | str) -> Manifest:
        return cls.from_dict(json.loads(text))


def object_prefix(root: str, data_class: str, kind: str, backup_id: str) -> str:
    return f"{root.strip('/')}/{data_class}/{kind}/{backup_id}/"


def new_backup_id(data_class: str, now: float, tail: str) -> str:
    """`orders-20261201T175000-3f9a`: sortable by time within a class."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S")
    return f"{data_class}-{stamp}-{tail}"
