"""Which playbook for which incident: pure, from the incident and the snapshot.

app_server -> app_server.replace; load_balancer -> load_balancer.failover_eip while
another LB of its group answers (the playbook moves the Elastic IP there if the lost
one held it, then rebuilds a standby), else load_balancer.replace; database primary
-> database.recover (a replica has no playbook yet); the serving region lost
(region_outage) -> region.failover; a standby region lost (dr_capacity_lost) -> none.
A database's role comes from its agent's check (now, else as last reported), its tag
only as a fallback; a database whose role nobody knows is recovered as the primary
only with an operator's approval (the plan says why).
A zone incident gets one plan per affected group, each avoiding the zone, load
balancers first, then databases, then app servers.
"""

from __future__ import annotations

from collections.abc import Mapping

from drwatch.assess.views import RulesConfig, is_retired, view
from drwatch.model.findings import Finding
from drwatch.model.fleet import Instance, Role
from drwatch.model.incident import Incident
from drwatch.model.observation import Layer
from drwatch.model.plan import Plan, PlaybookName, Scope
from drwatch.model.snapshot import Snapshot
from drwatch.roles import reported_role, role_of

ACTIONABLE_SCOPES = frozenset({Scope.INSTANCE, Scope.ZONE, Scope.REGION})


def plans_for(
    incident: Incident,
    snapshot: Snapshot,
    cfg: RulesConfig,
    retired: frozenset[str] = frozenset(),
    known_roles: Mapping[str, str] | None = None,
) -> tuple[Plan, ...]:
    """The plans that would recover `incident`; empty when nothing can (detected only).
    `known_roles`: the database role each instance last reported (a lost host reports
    nothing now)."""
    if incident.severity != "outage" or incident.scope not in ACTIONABLE_SCOPES:
        return ()
    if incident.scope is Scope.REGION:
        # Only the serving region's loss moves the service; a lost standby region
        # (dr_capacity_lost) is an alert and never reaches here as an outage. Once
        # region.failover has run, its targets are retired: nothing is left to do.
        serving_lost = incident.finding == Finding.REGION_OUTAGE
        left = [t for t in incident.target_ids if t not in retired]
        return (_region_plan(incident),) if serving_lost and left else ()
    by_group = _targets_by_group(incident, snapshot, retired)
    plans = []
    for group, members in sorted(by_group.items(), key=_order):
        chosen = _playbook(members, snapshot, cfg, retired, known_roles or {})
        if chosen is None:
            continue
        playbook, approval = chosen
        avoid = (incident.zone,) if incident.scope is Scope.ZONE else ()
        plans.append(
            Plan(
                incident_id=incident.id,
                playbook=playbook,
                region=incident.region,
                zone=incident.zone,
                group=group,
                targets=tuple(sorted(i.id for i in members)),
                avoid_zones=avoid,
                reason=f"{incident.finding}: {incident.evidence}",
                approval=approval,
            )
        )
    return tuple(plans)


# A zone's plans run in this order: the service's entry point first (traffic), then the
# database (app servers launched after it get its new address), then the app servers.
ROLE_ORDER = {Role.LOAD_BALANCER: 0, Role.DATABASE: 1, Role.APP_SERVER: 2}


def _order(item: tuple[str, list[Instance]]) -> tuple[int, str]:
    group, members = item
    return (ROLE_ORDER.get(members[0].role, 9), group)


def _region_plan(incident: Incident) -> Plan:
    return Plan(
        incident_id=incident.id,
        playbook=PlaybookName.REGION_FAILOVER,
        region=incident.region,
        zone="",
        group=",".join(incident.groups),
        targets=incident.target_ids,
        avoid_zones=(),
        reason=f"{incident.finding}: {incident.evidence}",
    )


def _targets_by_group(
    incident: Incident, snapshot: Snapshot, retired: frozenset[str]
) -> dict[str, list[Instance]]:
    """The incident's targets not yet replaced (retired), by group. Targets that left the
    fleet (terminated, then dropped by discovery) are rebuilt from the record."""
    out: dict[str, list[Instance]] = {}
    for tid, name in zip(incident.target_ids, incident.target_names, strict=False):
        if tid in retired:
            continue
        inst = snapshot.fleet.get(tid) or _from_record(incident, tid, name)
        if inst is not None:
            out.setdefault(inst.group, []).append(inst)
    return out


def _from_record(incident: Incident, tid: str, name: str) -> Instance | None:
    if len(incident.groups) != 1 or len(incident.roles) != 1:
        return None
    return Instance(
        id=tid,
        name=name,
        region=incident.region,
        zone=incident.zone,
        role=Role(incident.roles[0]),
        group=incident.groups[0],
    )


def _playbook(
    members: list[Instance],
    snapshot: Snapshot,
    cfg: RulesConfig,
    retired: frozenset[str],
    known_roles: Mapping[str, str],
) -> tuple[PlaybookName, str] | None:
    """The playbook, and why it needs approval ("" when it does not); None: no playbook."""
    role = members[0].role
    if role is Role.APP_SERVER:
        return PlaybookName.APP_REPLACE, ""
    if role is Role.LOAD_BALANCER:
        if _healthy_peer(members, snapshot, cfg, retired):
            return PlaybookName.LB_FAILOVER_EIP, ""
        return PlaybookName.LB_REPLACE, ""
    return _database_playbook(members, snapshot, known_roles)


def _database_playbook(
    members: list[Instance], snapshot: Snapshot, known_roles: Mapping[str, str]
) -> tuple[PlaybookName, str] | None:
    """database.recover for a lost primary; for a database of unknown role too, unless a
    peer reports being the primary, but then only with approval: recovering a replica
    as the primary would split the data."""
    roles = {i.id: role_of(i, snapshot, known_roles)[0] for i in members}
    if "primary" in roles.values():
        return PlaybookName.DB_RECOVER, ""
    unknown = [i for i in members if not roles[i.id]]
    if not unknown or _peer_reports_primary(members, snapshot):
        return None
    names = ", ".join(i.name or i.id for i in unknown)
    return PlaybookName.DB_RECOVER, (
        f"the database role of {names} is unknown (no postgres check reported it, no "
        f"drwatch:db-role tag): recovering it as the primary needs an operator"
    )


def _peer_reports_primary(members: list[Instance], snapshot: Snapshot) -> bool:
    lost = {i.id for i in members}
    peers = (p for p in snapshot.fleet.in_group(members[0].group) if p.id not in lost)
    return any(reported_role(snapshot, p.id) == "primary" for p in peers)


def _healthy_peer(
    members: list[Instance], snapshot: Snapshot, cfg: RulesConfig, retired: frozenset[str]
) -> bool:
    """Another member of the group, not among the targets, whose app (or agent) answers."""
    lost = {i.id for i in members}
    now = snapshot.taken_at
    for peer in snapshot.fleet.in_group(members[0].group):
        if peer.id in lost or is_retired(peer, retired):
            continue
        app = view(snapshot.get(peer.id, Layer.APP), now, cfg)
        agent = view(snapshot.get(peer.id, Layer.AGENT), now, cfg)
        if app.answering or (agent.answering and snapshot.get(peer.id, Layer.APP) is None):
            return True
    return False


def is_primary(
    instance: Instance, snapshot: Snapshot, known_roles: Mapping[str, str] | None = None
) -> bool:
    """Is this database known to be the primary? Its agent's check now, else the role it
    last reported, else its role tag (see `drwatch.roles.role_of`). Unknown is not."""
    return role_of(instance, snapshot, known_roles)[0] == "primary"
