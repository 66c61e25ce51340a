"""The scenarios section: what happens, scenario by scenario, with each playbook's steps
read from the playbook registry itself."""

from __future__ import annotations

from drwatch.act.playbooks import all_playbooks
from drwatch.config import Config
from drwatch.model.fleet import Role
from drwatch.model.plan import PlaybookName
from drwatch.plan.data import BACKUPS_OFF
from drwatch.plan.document import Block, Items, Note, Para, Section, Sub, Table
from drwatch.units import format_duration

REGION_PENDING = (
    "region.failover is not in this build's playbook registry yet (the region-failover "
    "feature is being built): losing the serving region is detected and alerted, and "
    "the failover below is done by hand."
)


def _steps(name: PlaybookName) -> str:
    book = all_playbooks().get(name)
    if book is None:
        return "not in this build"
    return " → ".join(s.name for s in book.steps)


def _approval(cfg: Config, scope: str) -> str:
    if scope not in cfg.policy.approval_required:
        return "none: drwatch acts by itself (through its safety gates)"
    who = ", ".join(c.name for c in cfg.plan.approvers) or "an operator (no approvers named)"
    return f"yes: it waits for `drwatch approve ID` from {who}"


def _roles(cfg: Config) -> set[Role]:
    return {g.role for g in cfg.groups}


def _instance_scenario(cfg: Config) -> list[Block]:
    rows = []
    roles = _roles(cfg)
    if Role.LOAD_BALANCER in roles:
        rows.append(
            ("load balancer", "load_balancer.failover_eip", _steps(PlaybookName.LB_FAILOVER_EIP))
        )
        rows.append(
            ("load balancer, no standby", "load_balancer.replace", _steps(PlaybookName.LB_REPLACE))
        )
    if Role.APP_SERVER in roles:
        rows.append(("app server", "app_server.replace", _steps(PlaybookName.APP_REPLACE)))
    if Role.DATABASE in roles:
        rows.append(("database", "database.recover", _steps(PlaybookName.DB_RECOVER)))
    return [
        Para(
            "Detected when the provider says the server stopped or failed its checks, or "
            f"when agent and application stay silent for {format_duration(cfg.policy.dead_grace)}."
        ),
        Table(("what failed", "playbook", "steps, in order"), tuple(rows)),
        Para(f"Approval: {_approval(cfg, 'instance')}."),
        Items(
            (
                "Afterwards: find out why the server failed (provider console, its logs).",
                "A database that lost data: compare the measured loss with the RPO and tell "
                "the owners.",
            )
        ),
    ]


def _zone_scenario(cfg: Config) -> list[Block]:
    share = f"{cfg.policy.blast_radius:.0%}"
    return [
        Para(
            "Detected when the provider reports the zone impaired with its servers silent, "
            f"or when {cfg.policy.zone_down_share:.0%} of its servers are down while another "
            "zone answers. drwatch replaces the lost servers in healthy zones, never more "
            f"than {share} of a group within {format_duration(cfg.policy.blast_window)}, and "
            f"at most {cfg.policy.max_concurrent} playbooks at once."
        ),
        Para(f"Approval: {_approval(cfg, 'zone')}."),
        Items(("Afterwards: when the zone is back, rebalance the groups across zones.",)),
    ]


def _region_scenario(cfg: Config) -> list[Block]:
    standby = ", ".join(cfg.provider.regions[1:]) or "none configured"
    blocks: list[Block] = [
        Para(
            "Detected when the region's API and every server in it stop answering while the "
            "canaries and another region answer. Losing the standby region is an alert "
            "(disaster-recovery capacity lost), never a failover."
        ),
        Para(f"Approval: {_approval(cfg, 'region')}."),
    ]
    if PlaybookName.REGION_FAILOVER not in all_playbooks():
        blocks.append(Note("missing", REGION_PENDING))
    blocks.append(
        Items(
            (
                f"Check the standby region ({standby}) is ready: its replica database and images.",
                "Promote the cross-region replica database.",
                "Bring the standby region's app servers up to each group's size.",
                "Make sure a load balancer serves there.",
                "Switch the service's DNS records to the standby region.",
                "Verify the service answers through its public name.",
            ),
            ordered=True,
        )
    )
    return blocks


def _api_scenario(cfg: Config) -> list[Block]:
    return [
        Para(
            "The provider's API fails while the servers and applications answer. drwatch "
            "alerts and never acts: nothing is down, and nothing could be changed anyway."
        ),
        Items(
            (
                "Follow the provider's status page; do not change the infrastructure by hand.",
                "If the API stays down and servers start failing, decide with the approvers "
                "whether to move to the standby region.",
            )
        ),
    ]


def _watcher_scenario(cfg: Config) -> list[Block]:
    return [
        Para(
            "When every canary outside the watched clouds fails, drwatch doubts its own "
            "network: it opens no incident, takes no action and reports its own state. If "
            "drwatch itself stops, its service manager restarts it and it resumes "
            "unfinished recovery steps from its journal, without doubling any."
        ),
        Items(
            (
                "Check the watcher host's network and `systemctl status drwatch` on "
                f"{cfg.watcher.name}.",
                f"Its state lives in {cfg.watcher.state_dir}: keep that directory when "
                "moving the watcher to another host.",
            )
        ),
    ]


def _provider_scenario(cfg: Config) -> list[Block]:
    offsite = cfg.backup is not None and cfg.backup.locations.offsite is not None
    return [
        Para(
            "Everything at this provider is gone or unusable. drwatch cannot fix this by "
            "itself: the service is rebuilt elsewhere from the off-site copies."
        ),
        Note("ok", "Backups are copied off-site and verified there (see Data classes).")
        if offsite
        else Note(
            "unmet" if cfg.backup else "missing",
            BACKUPS_OFF
            if not cfg.backup
            else "No off-site location is configured: a provider loss loses every backup.",
        ),
        Items(
            (
                "Declare the disaster; call the escalation contacts in order.",
                "Open an account at the second provider; create the network and servers "
                "for each group (images: from the off-site copy or rebuilt).",
                "Fetch the private backup key from its custody (see Key custody).",
                "Restore each persistent data class from its newest verified off-site dump; "
                "restore the configuration archives onto their servers.",
                "Point DNS at the new load balancer; verify the service answers.",
                "Point drwatch at the new provider (config) and run a drill there.",
            ),
            ordered=True,
        ),
    ]


_SCENARIOS = (
    ("One server is lost", _instance_scenario),
    ("A zone is lost", _zone_scenario),
    ("A region is lost", _region_scenario),
    ("The provider's API fails", _api_scenario),
    ("The watcher itself is impaired", _watcher_scenario),
    ("The whole provider is lost", _provider_scenario),
)


def scenarios_section(cfg: Config) -> Section:
    blocks: list[Block] = [
        Para(
            f"Gates on every action: a warm-up of {format_duration(cfg.policy.warmup)} after "
            f"start, a cooldown of {format_duration(cfg.policy.cooldown)} per server or zone, "
            f"and the kill switch (`drwatch pause`)."
            + (
                " The config is in dry-run mode: drwatch decides but does not act."
                if cfg.policy.dry_run
                else ""
            )
        )
    ]
    for title, make in _SCENARIOS:
        blocks.append(Sub(title))
        blocks += make(cfg)
    return Section("scenarios", "What happens, scenario by scenario", tuple(blocks))
