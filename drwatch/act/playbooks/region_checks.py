"""`region.failover`'s preconditions as pure checks: what was read in, the refusals out.

The playbook's `preconditions` step reads the world (the public name's records, the
standby region's API and images, the fleet) and hands it here; each function answers
with what to use and the reasons to refuse, nothing touched. Every refusal is a
sentence the operator reads in the run's detail ("refused: ...").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from drwatch.act.base import JSON, ROLE_TAG, GroupInfo, database_integrity, is_up
from drwatch.model.fleet import Instance, Role
from drwatch.model.observation import Layer
from drwatch.model.regions import DnsRecord, RegionRoles, failover_pair
from drwatch.model.snapshot import Snapshot
from drwatch.providers.base import ImageInfo
from drwatch.roles import database_check, reported_role

ROLES = (Role.LOAD_BALANCER, Role.APP_SERVER, Role.DATABASE)
REPLICA_ROLES = frozenset({"replica", "standby", "secondary"})


def records_refusal(found: Sequence[DnsRecord], hosted_zone: str, public_name: str) -> str | None:
    """Why the public name's records cannot be switched (no PRIMARY and SECONDARY
    failover pair, naming the kinds drwatch does not manage); None when they can."""
    primary, secondary = failover_pair(found)
    if primary is not None and secondary is not None:
        return None
    kinds = "; ".join(r.unmanaged() or "" for r in found if r.unmanaged())
    what = f" ({kinds})" if kinds else ""
    return (
        f"{public_name} in {hosted_zone} has no PRIMARY and SECONDARY "
        f"failover records drwatch can switch{what}"
    )


def serving_refusals(
    roles: RegionRoles, lost: str, regions: Sequence[str]
) -> tuple[str | None, list[str]]:
    """The standby region to move to (the one the records name, else the first other),
    and the refusals: the lost region does not serve, or there is nowhere to go."""
    reasons = []
    if not roles.is_serving(lost):
        reasons.append(
            f"{lost} is not the serving region ({roles.detail}): losing it is lost DR "
            "capacity, not a failover"
        )
    others = [r for r in regions if r != lost]
    standby = roles.standby if roles.standby in others else (others[0] if others else None)
    return standby, reasons + ([] if standby else ["no standby region"])


def replica_lag(snap: Snapshot, instance_id: str) -> float | None:
    """The replication lag (seconds) the database's agent reports; None when unknown."""
    check = database_check(snap, instance_id)
    data = check.get("data") if check else None
    value = data.get("lag_s") if isinstance(data, dict) else None
    return float(value) if isinstance(value, int | float) else None


def replica_to_promote(snap: Snapshot, region: str) -> tuple[Instance | None, list[str]]:
    """The region's replica that can be promoted (by name, the first that passes), or
    why none can: agent down, data corrupt, not a replica, lag unknown, none there."""
    reasons: list[str] = []
    for db in sorted(snap.fleet.in_region(region), key=lambda i: i.name):
        if db.role is not Role.DATABASE or db.state.is_gone:
            continue
        if (why := _not_promotable(snap, db, region)) is None:
            return db, []
        reasons.append(why)
    return None, reasons or [f"no database replica in {region}"]


def _not_promotable(snap: Snapshot, db: Instance, region: str) -> str | None:
    if not is_up(snap, db.id, Layer.AGENT):
        return f"replica {db.name} in {region} is not reachable (agent down)"
    if database_integrity(snap, db.id) is False:
        return f"replica {db.name} reports its data corrupt"
    if reported_role(snap, db.id) not in REPLICA_ROLES:
        return f"{db.name} reports role {reported_role(snap, db.id) or 'unknown'}"
    if replica_lag(snap, db.id) is None:
        return f"replica {db.name}: its replication lag is unknown"
    return None


def role_images(images: Sequence[ImageInfo], region: str) -> tuple[dict[str, str], list[str]]:
    """The image to launch each role from in `region` (by its role tag), and a refusal
    for each role without one."""
    found: dict[str, str] = {}
    for role in ROLES:
        image = next((i.id for i in images if dict(i.tags).get(ROLE_TAG) == role.value), None)
        if image:
            found[role.value] = image
    missing = [r.value for r in ROLES if r.value not in found]
    return found, [f"no {r} image in {region}" for r in missing]


def app_groups(
    groups: Mapping[str, GroupInfo], snap: Snapshot, lost: str, standby: str
) -> dict[str, JSON]:
    """Per app group of the lost region: the standby group that takes its load and the
    size it must reach (the group's configured size, else how many members it had)."""
    out: dict[str, JSON] = {}
    here = [i for i in snap.fleet.in_region(standby) if i.role is Role.APP_SERVER]
    target_group = here[0].group if here else ""
    for inst in snap.fleet.in_region(lost):
        if inst.role is not Role.APP_SERVER or inst.group in out:
            continue
        info = groups.get(inst.group)
        size = (info.size if info else None) or len(snap.fleet.in_group(inst.group))
        out[inst.group] = {"size": size, "standby_group": target_group or inst.group}
    return out
