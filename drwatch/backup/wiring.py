"""The daemon's one call into backups: build the service from the config, or nothing.

Called by the composition root (drwatch.daemon). A backup problem at start (gpg
missing, a key file holding another key, an expired key, a private key file that does
not match the recipient) stops the start as a configuration error, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack

from prometheus_client import CollectorRegistry

from drwatch.backup.cluster import BackupSharing, fenced_deps, sharing_for
from drwatch.backup.errors import BackupError
from drwatch.backup.fleet import Agents, Cloud, FleetDeps, FleetSources
from drwatch.backup.metrics import BackupMetrics
from drwatch.backup.service import BackupService, SourceFactory, open_service
from drwatch.cluster.leader import Election
from drwatch.cluster.wiring import Shared
from drwatch.config import Config, backup_rpo_of
from drwatch.errors import ConfigError
from drwatch.model.fleet import Fleet


async def start_backups(
    cfg: Config,
    stack: AsyncExitStack,
    registry: CollectorRegistry,
    sources: Mapping[str, SourceFactory] | None = None,
    fleet: FleetDeps | None = None,
    *,
    shared: Shared | None = None,
) -> BackupService | None:
    """The running service, owned by `stack`; None when `[backup]` is not configured.

    `sources` maps a kind (`dump`, `config_archive`) to what makes its stream; kinds
    without one are not scheduled. `fleet` gives the real sources: snapshots, dumps and
    archives through the hosts' agents, images through the provider. With `shared`
    (several watchers), backups follow the leader (drwatch.backup.cluster): the daemon
    runs `service.leader.run()` in its task group."""
    if cfg.backup is None:
        return None
    sharing = _sharing(cfg, shared)
    if sharing is not None and fleet is not None:
        fleet = fenced_deps(fleet, sharing.gate)
    fleet_sources = FleetSources(fleet) if fleet is not None else None
    try:
        return await stack.enter_async_context(
            open_service(
                cfg.backup,
                backup_rpo_of(cfg),
                cfg.watcher.state_dir,
                sources=sources or {},
                metrics=BackupMetrics(registry),
                producers=fleet_sources.producers() if fleet_sources else None,
                extra_jobs=fleet_sources.image_jobs if fleet_sources else None,
                sharing=sharing,
            )
        )
    except BackupError as err:
        raise ConfigError([f"backup: {err}"]) from None


def _sharing(cfg: Config, shared: Shared | None) -> BackupSharing | None:
    if cfg.cluster is None or shared is None or shared.etcd is None:
        return None
    if not isinstance(shared.leadership, Election):
        return None
    state_dir = cfg.watcher.state_dir
    return sharing_for(shared.etcd, cfg.cluster.namespace, shared.leadership, state_dir)


def fleet_deps(
    cfg: Config,
    fleet: Callable[[], Fleet],
    role: Callable[[str], str | None],
    agents: Agents,
    cloud: Cloud,
) -> FleetDeps | None:
    """What the real sources need from the daemon; None without `[backup]`."""
    if cfg.backup is None:
        return None
    standby = cfg.backup.locations.standby_region
    return FleetDeps(
        fleet=fleet,
        role=role,
        agents=agents,
        cloud=cloud,
        regions=tuple(cfg.provider.regions),
        standby_region=standby.region if standby is not None else None,
        image_every=max(cfg.provider.discovery_interval, 30.0),
    )
