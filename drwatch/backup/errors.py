"""Errors of the backup pipeline, translated where each library ends."""

from __future__ import annotations


class BackupError(Exception):
    """A backup could not be taken, copied or checked; the message says why."""


class StoreError(BackupError):
    """The object store refused or failed a call (S3's error code in `code`)."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class ObjectMissingError(StoreError):
    """The object is not there."""
