"""What a backup run reads: a plaintext stream and what it is a copy of.

Neutral on purpose (no daemon import): the agent builds these on a database host, where
the dump is encrypted and uploaded without the plaintext ever leaving it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """What a run backs up: the plaintext stream and what it is a copy of."""

    stream: AsyncIterable[bytes]
    identity: dict[str, str]
    consistent_at: dict[str, str]
    expected_size: int | None = None
