"""Shared secrets from files. Neutral ground: the daemon and the agent both use it."""

from __future__ import annotations

from pathlib import Path

from drwatch.errors import ConfigError

MIN_SECRET_BYTES = 16


def read_secret(path: Path) -> bytes:
    """The secret in `path`, which must not be readable by group or others."""
    try:
        mode = path.stat().st_mode
        secret = path.read_bytes().strip()
    except OSError as err:
        raise ConfigError([f"{path}: cannot read secret: {err.strerror}"]) from None
    if mode & 0o077:
        raise ConfigError(
            [
                f"{path}: secret file is readable by group or others "
                f"(mode {mode & 0o777:o}); chmod 600 it"
            ]
        )
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError([f"{path}: secret is shorter than {MIN_SECRET_BYTES} bytes"])
    return secret
