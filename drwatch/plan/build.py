"""Build the DR plan from the config and, when given, the daemon's live state. Pure.

Every sentence is generated from what drwatch knows, never kept by hand: the
objectives, the groups and where they run, the data classes, the playbooks and their
steps (from the playbook registry itself), the gates that need approval and whom to
ask, readiness findings and the drill ledger. A part without data says what is
missing and why; a part that is not met is a `Note("unmet")`, which `--check` counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from drwatch.act.playbooks import all_playbooks
from drwatch.config import Config, Contact, GroupConfig, backup_rpo_of
from drwatch.ledger import DrillRecord, drill_status
from drwatch.model.fleet import Role
from drwatch.model.plan import PlaybookName
from drwatch.plan.document import Block, Items, Note, Para, Plan, Section, Sub, Table
from drwatch.units import format_duration

BACKUPS_OFF = (
    "No [backup] section is configured: drwatch takes and verifies no backups, so no "
    "verified backup, no measured RPO and no off-site copy can be shown (docs/backups.md)."
)
KEYS_OFF = (
    "No backup recipient is configured ([backup.recipient]): the key's fingerprint and "
    "where the private key's copies are kept cannot be shown."
)
REGION_PENDING = (
    "region.failover is not in this build's playbook registry yet (the region-failover "
    "feature is being built): losing the serving region is detected and alerted, and "
    "the failover below is done by hand."
)
DATA_CLASSES = ("fixed", "transient", "configuration", "persistent")


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


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s" if seconds % 1 else f"{seconds:.0f} s"
    return format_duration(round(seconds))


def _plain(seconds: float) -> str:
    """`15 minutes`, `2 hours`, `182 days`: objectives in words."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} seconds"


def build_plan(cfg: Config, live: Live, drills: Drills, now: float) -> Plan:
    sections = (
        _summary(cfg, live),
        _objectives(cfg),
        _contacts(cfg),
        _services(cfg, live),
        _data(cfg, live, now),
        _keys(cfg, live),
        _scenarios(cfg),
        _readiness(live),
        _drills(cfg, drills, now),
    )
    source = f"config, live state from {live.api}" if live.status else "config only"
    return Plan(cfg.plan.title, now, source, sections)


# -- sections ------------------------------------------------------------------------------


def _summary(cfg: Config, live: Live) -> Section:
    blocks: list[Block] = []
    if cfg.plan.service:
        blocks.append(Para(cfg.plan.service))
    blocks.append(
        Para(
            f"drwatch (watcher {cfg.watcher.name}) runs outside the clouds it watches. It "
            f"checks every server's cloud state, an agent on the server and the application "
            f"itself, decides how wide an outage is, and runs the recovery steps below by "
            f"itself where this plan says so. This document is generated from its "
            f"configuration" + (" and its live state." if live.status else ".")
        )
    )
    if not live.status:
        why = live.error or "no --api URL was given"
        blocks.append(Note("missing", f"Live state is not shown: {why}."))
    return Section("summary", "About this plan", tuple(blocks))


def _objectives(cfg: Config) -> Section:
    obj = cfg.objectives
    rows = [("overall", format_duration(obj.rpo), format_duration(obj.rto))]
    rows += [
        (name, format_duration(o.rpo), format_duration(o.rto))
        for name, o in sorted(obj.data_classes.items())
    ]
    blocks: list[Block] = [
        Para(
            f"Recovery point objective (RPO) {format_duration(obj.rpo)}: after a disaster we "
            f"accept losing at most the last {_plain(obj.rpo)} of data. Recovery time "
            f"objective (RTO) {format_duration(obj.rto)}: the service is back within "
            f"{_plain(obj.rto)} of the failure."
        ),
        Table(("applies to", "RPO (data we may lose)", "RTO (time to recover)"), tuple(rows)),
        Para(
            f"The plan is tested at least every {_plain(obj.drill_interval)} by a passing "
            f"drill of each kind: {', '.join(obj.drill_kinds)}."
        ),
    ]
    return Section("objectives", "Objectives", tuple(blocks))


_CONTACT_HEADERS = ("name", "role", "email", "phone", "when")


def _contact_table(people: Sequence[Contact]) -> Table:
    """Only the columns someone filled in (a name is always there)."""
    rows = [(c.name, c.role, c.email, c.phone, c.hours) for c in people]
    keep = [i for i in range(len(_CONTACT_HEADERS)) if i == 0 or any(r[i] for r in rows)]
    return Table(
        tuple(_CONTACT_HEADERS[i] for i in keep), tuple(tuple(r[i] for i in keep) for r in rows)
    )


def _contacts(cfg: Config) -> Section:
    plan = cfg.plan
    blocks: list[Block] = []
    for title, people, missing in (
        ("Owners", plan.owners, "No owners are named: set [[plan.owners]] in the config."),
        (
            "Who approves",
            plan.approvers,
            "No approvers are named: set [[plan.approvers]] in the config.",
        ),
        (
            "Escalation, in this order",
            plan.escalation,
            "No escalation contacts: set [[plan.escalation]] in the config.",
        ),
    ):
        blocks.append(Sub(title))
        if people:
            blocks.append(_contact_table(people))
        else:
            blocks.append(Note("unmet", missing))
    return Section("contacts", "Owners and escalation", tuple(blocks))


def _group_places(g: GroupConfig, live: Live) -> tuple[str, str, str]:
    """(instances, zones, regions) of a group from the live status, or '-' without it."""
    targets = [t for t in (live.status or {}).get("targets") or [] if t.get("group") == g.name]
    if not live.status:
        return "-", "-", "-"
    names = ", ".join(sorted(str(t.get("name")) for t in targets)) or "none found"
    zones = ", ".join(sorted({str(t.get("zone")) for t in targets})) or "-"
    regions = ", ".join(sorted({str(t.get("region")) for t in targets})) or "-"
    return names, zones, regions


def _live_readiness(live: Live) -> Mapping[str, Any] | None:
    found = (live.status or {}).get("readiness")
    return found if isinstance(found, Mapping) else None


def _regions_para(cfg: Config, live: Live) -> tuple[Para, list[str]]:
    """Which region serves: as the daemon sees it now, else the config's first region."""
    ready = _live_readiness(live)
    if ready is not None and ready.get("serving_region"):
        standby = [str(ready["standby_region"])] if ready.get("standby_region") else []
        detail = (ready.get("regions") or {}).get("detail") or "as drwatch sees it now"
        text = (
            f"Provider: {cfg.provider.kind}. Serving region: {ready['serving_region']} "
            f"({detail}). Standby: {', '.join(standby) or 'none'}."
        )
        return Para(text), standby
    serving, standby = cfg.provider.regions[0], list(cfg.provider.regions[1:])
    text = (
        f"Provider: {cfg.provider.kind}. Serving region: {serving} (the first region "
        f"configured). Standby: {', '.join(standby) or 'none'}."
    )
    return Para(text), standby


def _services(cfg: Config, live: Live) -> Section:
    rows = []
    for g in cfg.groups:
        names, zones, where = _group_places(g, live)
        size = str(g.size) if g.size is not None else "-"
        rows.append((g.name, g.role.value, size, names, zones, where))
    serving, standby = _regions_para(cfg, live)
    blocks: list[Block] = [
        serving,
        Table(("group", "role", "size", "instances", "zones", "regions"), tuple(rows)),
    ]
    if not standby:
        blocks.append(Note("unmet", "Only one region is configured: a region loss has no standby."))
    ready = _live_readiness(live)
    if ready is not None and ready.get("regional_fallback") is False:
        why = ready.get("fallback") or "unknown"
        blocks.append(Note("unmet", f"The service has no regional fallback now: {why}."))
    if not live.status:
        blocks.append(Note("missing", "Instances, zones and regions need the live state."))
    return Section("services", "Services and where they run", tuple(blocks))


_PROTECTION = {
    "fixed": "an image of each group in every region it may launch in",
    "transient": "deliberately not backed up",
    "configuration": "encrypted archives of the configured paths, copied off-site",
    "persistent": "volume snapshots and encrypted dumps, copied off-site; replicas",
}


def _data(cfg: Config, live: Live, now: float) -> Section:
    if cfg.backup is None:
        return _data_unconfigured(cfg)
    rpo_of = backup_rpo_of(cfg)
    doc = live.backups or {}
    classes = {
        str(c.get("data_class")): c for c in doc.get("classes") or [] if isinstance(c, Mapping)
    }
    rows = tuple(
        (
            name,
            dc.kind.value,
            ", ".join(dc.groups) or "-",
            _PROTECTION[dc.kind.value],
            format_duration(rpo_of[name]),
            _newest(classes.get(name), now) if live.backups else "-",
        )
        for name, dc in cfg.backup.classes.items()
    )
    headers = ("class", "kind", "groups", "how it is protected", "RPO", "newest verified backup")
    blocks: list[Block] = [Table(headers, rows)] if rows else []
    if not rows:
        blocks.append(Note("unmet", "[backup] names no data class: nothing is backed up."))
    blocks += _backup_state(live, now)
    return Section("data", "Data classes and backups", tuple(blocks))


def _data_unconfigured(cfg: Config) -> Section:
    persistent = [
        f"{g.data_class or '(no data class)'}: databases of group {g.name}"
        for g in cfg.groups
        if g.role is Role.DATABASE
    ]
    what = {
        "fixed": "machine images of every group",
        "transient": "caches, queues, scratch",
        "configuration": "files on the servers",
        "persistent": "; ".join(persistent) or "no database group configured",
    }
    rows = tuple((c, what[c], _PROTECTION[c], "-") for c in DATA_CLASSES)
    blocks: list[Block] = [
        Table(("class", "what is in it", "how it is protected", "newest verified backup"), rows),
        Note("missing", BACKUPS_OFF),
    ]
    return Section("data", "Data classes and backups", tuple(blocks))


def _newest(doc: Mapping[str, Any] | None, now: float) -> str:
    """`primary: 4 m ago; offsite: none verified` for one class's locations."""
    if doc is None or not doc.get("backed_up", True):
        return "not backed up (on purpose)"
    parts = []
    for loc in doc.get("locations") or []:
        at = loc.get("newest_verified_at")
        age = f"{dur(now - float(at))} old" if at is not None else "none verified"
        parts.append(f"{loc.get('location')}: {age}")
    return "; ".join(parts) or "-"


def _backup_state(live: Live, now: float) -> list[Block]:
    """The daemon's backup findings and its last restore test, or why they are not shown."""
    if live.backups is None:
        why = live.backups_error or live.error or "no --api URL was given"
        return [Note("missing", f"Verified backups and restore tests need the live state: {why}.")]
    doc = live.backups
    blocks: list[Block] = [
        Note("unmet", str(f.get("message") or f.get("finding")))
        for f in doc.get("findings") or []
        if isinstance(f, Mapping)
    ]
    blocks.append(_restore_proof(doc.get("restore_test"), now))
    return blocks


def _restore_proof(test: Any, now: float) -> Block:
    """When the data was last proven restorable (the newest dump decrypted and restored)."""
    if not isinstance(test, Mapping) or not test.get("enabled"):
        return Note(
            "missing",
            "drwatch does not test restores by itself (the watcher holds no private key): "
            "run `drwatch backup restore-test` with the offline key and record it.",
        )
    last = test.get("last_passed")
    if not isinstance(last, Mapping):
        return Note("unmet", "No restore test has passed yet: no backup is proven restorable.")
    took, age = dur(last.get("restore_s")), dur(last.get("data_age_s"))
    line = (
        f"Last proven restorable {when(float(last['at']))}: {last.get('backup_id')} restored "
        f"{last.get('rows')} rows in {took}, data {age} old."
    )
    overdue = test.get("overdue")
    return Note("unmet" if overdue else "ok", line + (" Overdue." if overdue else ""))


def _keys(cfg: Config, live: Live) -> Section:
    blocks: list[Block] = [
        Para(
            "Backups are encrypted to a public key; the private key never goes to a "
            "watched server or into the cloud."
        )
    ]
    backup = cfg.backup
    if backup is None or backup.recipient is None:
        blocks.append(Note("missing", KEYS_OFF))
        return Section("keys", "Key custody", tuple(blocks))
    blocks.append(Para(f"Recipient key fingerprint: {_spaced(backup.recipient.fingerprint)}."))
    blocks.append(Sub("Where the private key's copies are kept"))
    if backup.custody:
        blocks.append(Items(tuple(backup.custody)))
    else:
        blocks.append(
            Note("unmet", "No custody is recorded (backup.custody): who can decrypt a backup?")
        )
    blocks.append(Para(_watcher_copy(backup.watcher_private_key_file is not None)))
    served = (live.backups or {}).get("recipient_fingerprint")
    if served and served != backup.recipient.fingerprint:
        blocks.append(
            Note("unmet", f"The running daemon encrypts to another key: {_spaced(str(served))}.")
        )
    return Section("keys", "Key custody", tuple(blocks))


def _watcher_copy(holds: bool) -> str:
    if holds:
        return (
            "The watcher holds one copy (outside every cloud): it tests restores on a "
            "schedule, and the database ladder's last rung (restore_from_dump) can use it "
            "after an operator's approval."
        )
    return (
        "The watcher holds no copy: restore tests and restoring from a dump are operator "
        "commands run where a copy is kept (`drwatch backup restore-test --key FILE`)."
    )


def _spaced(fingerprint: str) -> str:
    return " ".join(fingerprint[i : i + 4] for i in range(0, len(fingerprint), 4))


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


def _scenarios(cfg: Config) -> Section:
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


def _readiness(live: Live) -> Section:
    status = live.status
    if not status:
        # Asked and no answer is a failure of its own; not asked is only a gap.
        kind: Literal["missing", "unmet"] = "unmet" if live.error else "missing"
        why = live.error or "no --api URL was given"
        return Section("readiness", "Readiness now", (Note(kind, f"Readiness is unknown: {why}."),))
    findings = [f for f in status.get("findings") or [] if isinstance(f, Mapping)]
    incidents = [i for i in status.get("open_incidents") or [] if isinstance(i, Mapping)]
    blocks: list[Block] = [Para(f"drwatch says: {status.get('summary', '-')}")]
    if findings:
        rows = tuple(
            (str(f.get("severity")), str(f.get("finding")), str(f.get("evidence")))
            for f in findings
        )
        blocks.append(Table(("severity", "finding", "evidence"), rows))
        for f in findings:
            blocks.append(Note("unmet", f"{f.get('finding')}: {f.get('evidence')}"))
    for inc in incidents:
        blocks.append(
            Note("unmet", f"open incident {inc.get('id')}: {inc.get('finding')} {inc.get('state')}")
        )
    if not findings and not incidents:
        blocks.append(Note("ok", "No findings and no open incidents."))
    return Section("readiness", "Readiness now", tuple(blocks))


def _drill_row(r: DrillRecord) -> tuple[str, ...]:
    rto = f"{dur(r.recovery_s)} / {dur(r.rto_s)}"
    rpo = f"{dur(r.data_loss_s)} / {dur(r.rpo_s)}"
    return (when(r.started_at), r.kind, r.scenario, r.result, dur(r.detection_s), rto, rpo)


def _drills(cfg: Config, drills: Drills, now: float) -> Section:
    obj = cfg.objectives
    if drills.error:
        return Section(
            "drills",
            "Drills",
            (Note("unmet", f"The drill ledger could not be read: {drills.error}."),),
        )
    blocks: list[Block] = []
    for due in drill_status(drills.latest, obj.drill_kinds, obj.drill_interval, now):
        blocks.append(Note("unmet" if due.overdue else "ok", due.describe(now)))
    if drills.records:
        blocks.append(
            Table(
                (
                    "when",
                    "kind",
                    "scenario",
                    "result",
                    "detection",
                    "recovery / RTO",
                    "data loss / RPO",
                ),
                tuple(_drill_row(r) for r in drills.records),
            )
        )
    else:
        blocks.append(Para("No drill has been recorded yet."))
    return Section("drills", "Drills", tuple(blocks))
