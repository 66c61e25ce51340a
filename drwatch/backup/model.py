"""The states a backup can be in at one location (plain values: no I/O imports here)."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """A backup's state at one location."""

    PENDING = "pending"  # uploaded or copied, not checked yet
    VERIFIED = "verified"
    CORRUPT = "corrupt"
    MISSING = "missing"
    FAILED = "failed"  # the run did not finish: nothing of it counts
