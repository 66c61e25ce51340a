"""The daemon's one call into backups: build the service from the config, or nothing.

Called by the composition root (drwatch.daemon). A backup problem at start (gpg
missing, a key file holding another key, an expired key, a private key file that does
not match the recipient) stops the start as a configuration error, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack

from prometheus_client import CollectorRegistry

from drwatch.backup.errors import BackupError
from drwatch.backup.metrics import BackupMetrics
from drwatch.backup.service import BackupService, SourceFactory, open_service
from drwatch.config import Config, backup_rpo_of
from drwatch.errors import ConfigError


async def start_backups(
    cfg: Config,
    stack: AsyncExitStack,
    registry: CollectorRegistry,
    sources: Mapping[str, SourceFactory] | None = None,
) -> BackupService | None:
    """The running service, owned by `stack`; None when `[backup]` is not configured.

    `sources` maps a kind (`dump`, `config_archive`) to what makes its stream; kinds
    without one are not scheduled (the agent-side dump is still to come)."""
    if cfg.backup is None:
        return None
    try:
        return await stack.enter_async_context(
            open_service(
                cfg.backup,
                backup_rpo_of(cfg),
                cfg.watcher.state_dir,
                sources=sources or {},
                metrics=BackupMetrics(registry),
            )
        )
    except BackupError as err:
        raise ConfigError([f"backup: {err}"]) from None
