"""What the plan is built from besides the config: the daemon's live state and the drill
ledger, each with why it is missing when it is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from drwatch.ledger import DrillRecord


@dataclass(frozen=True)
class Live:
    """What the running daemon said (`status`: GET /api/v1/status), or why nothing."""

    status: Mapping[str, Any] | None = None
    api: str = ""
    error: str = ""
    # GET /api/v1/backups, or why it is not there (backups off, or no answer).
    backups: Mapping[str, Any] | None = None
    backups_error: str = ""


@dataclass(frozen=True)
class Drills:
    """The ledger's drills (newest first), or why they could not be read."""

    records: Sequence[DrillRecord] = ()
    source: str = ""
    error: str = ""
    latest: Mapping[tuple[str, str], float] = field(default_factory=dict)
