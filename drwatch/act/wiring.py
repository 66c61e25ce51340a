"""How the composition root builds the runner from the config: one call, no globals.

runner = build_runner(cfg, provider, fleet_view, agent_client, kill_switch=paused)
await runner.resume()          # on start: continue what a crash left unfinished
...
await runner.aclose()          # on stop: runs stay `running` in the journal

With `[cluster]` the daemon passes the etcd journal (`journal=`): fenced by the election.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from drwatch.act.base import (
    ActSettings,
    AgentActions,
    Approvals,
    BackupCatalogue,
    Clock,
    Deps,
    DumpRestore,
    FleetView,
    GroupInfo,
    NoApprovals,
    NoBackups,
    NoDumpRestore,
    RegionSetup,
    SystemClock,
)
from drwatch.act.journal import Journal
from drwatch.act.playbooks import all_playbooks
from drwatch.act.runner import Runner
from drwatch.assess.readiness import residency_refusal
from drwatch.cluster.sqlite_store import SqliteJournalStore
from drwatch.cluster.store import JournalStore
from drwatch.config import Config, GroupConfig, LayerTiming
from drwatch.model.regions import AddressBook
from drwatch.providers.base import Provider
from drwatch.providers.dns import Dns
from drwatch.roles import RoleMemory


def group_infos(groups: Iterable[GroupConfig]) -> dict[str, GroupInfo]:
    """The slice of each group's config that playbooks read."""
    return {
        g.name: GroupInfo(
            name=g.name,
            role=g.role,
            elastic_ip=g.elastic_ip,
            size=g.size,
            app_port=g.checks[0].port if g.checks else None,
            has_app_checks=bool(g.checks),
            service_checked=bool(g.service_url),
        )
        for g in groups
    }


def region_setup(cfg: Config, dns: Dns, book: AddressBook) -> RegionSetup:
    """What region.failover reads from the config: the public name, its zone, the load
    balancer group whose service check goes through that name, the residency rule."""
    residency = cfg.residency

    def refusal(_from_region: str, to_region: str) -> str | None:
        return residency_refusal(residency, to_region)

    base = RegionSetup(
        service_group=next((g.name for g in cfg.groups if g.service_url), ""),
        addresses=book,
        residency=refusal,
    )
    if cfg.dns is None:
        return base
    return replace(
        base,
        dns=dns,
        hosted_zone=cfg.dns.hosted_zone,
        public_name=cfg.dns.public_name,
        change_timeout=cfg.dns.change_timeout,
    )


def _settle(timing: LayerTiming) -> float:
    """How long a healthy new target takes to be called up: `rise` checks, each late by
    at most an interval plus a timeout."""
    return timing.rise * (timing.interval + timing.timeout)


def act_settings(cfg: Config) -> ActSettings:
    """Deadlines that leave room for hysteresis: a new host must be seen up `rise` times."""
    settle = max(_settle(cfg.timing.agent), _settle(cfg.timing.app))
    defaults = ActSettings()
    return ActSettings(
        healthy_timeout=max(defaults.healthy_timeout, 3 * settle),
        service_timeout=max(defaults.service_timeout, 3 * _settle(cfg.timing.app)),
    )


def build_runner(
    cfg: Config,
    provider: Provider,
    fleet: FleetView,
    agent: AgentActions,
    *,
    kill_switch: Callable[[], bool],
    clock: Clock | None = None,
    roles: RoleMemory | None = None,
    region: RegionSetup | None = None,
    journal: JournalStore | None = None,
    backups: BackupCatalogue | None = None,
    dump_restore: DumpRestore | None = None,
    approvals: Approvals | None = None,
) -> Runner:
    """The runner, its journal (by default under `watcher.state_dir`), every playbook,
    named after the watcher (journal rows carry that name)."""
    if journal is None:
        journal = SqliteJournalStore(Journal.in_state_dir(cfg.watcher.state_dir))
    deps = Deps(
        provider=provider,
        fleet=fleet,
        agent=agent,
        groups=group_infos(cfg.groups),
        settings=act_settings(cfg),
        clock=clock or SystemClock(),
        roles=roles if roles is not None else RoleMemory(),
        region=region or RegionSetup(),
        backups=backups if backups is not None else NoBackups(),
        dump_restore=dump_restore if dump_restore is not None else NoDumpRestore(),
        approvals=approvals if approvals is not None else NoApprovals(),
    )
    return Runner(journal, all_playbooks(), deps, cfg.watcher.name, kill_switch)
