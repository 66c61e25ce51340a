"""Which region serves, for assess and readiness: the serving-region model over a snapshot.

`serving_regions` is the one place the tick asks. It finds the primary databases in the
snapshot by the best word there is (what their agents' database checks report now, else
the role each last reported, kept by `drwatch.roles.RoleMemory`, else the
`drwatch:db-role` tags) and hands them, with the DNS records when the caller has them,
to the serving-region model (`drwatch.model.regions.region_roles`), which says which
region serves, which stands by, and whether DNS and the databases agree.

`is_standby` is the rule assess applies to a lost region: it is a standby (losing it is
DR capacity lost, never a failover) only when something is known about which region
serves and this region holds neither the DNS PRIMARY record nor a primary database. When
nothing is known, a lost region is treated as serving: `region_outage`, which waits for
an operator's approval by default, so not knowing never moves the service by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from drwatch.model.fleet import DB_ROLE_TAG, Instance, Role
from drwatch.model.regions import DnsRecord, RegionRoles, region_roles
from drwatch.model.snapshot import Snapshot
from drwatch.roles import normal_role, reported_role

UNKNOWN_ROLES = RegionRoles(regions=(), detail="serving region unknown: nothing observed")


def serving_regions(
    snapshot: Snapshot,
    remembered: Mapping[str, str] | None = None,
    configured: Sequence[str] = (),
    *,
    records: Sequence[DnsRecord] = (),
    address_regions: Mapping[str, str] | None = None,
    dns_error: str = "",
) -> RegionRoles:
    """The serving-region model for this snapshot (module docstring)."""
    regions = tuple(dict.fromkeys((*configured, *snapshot.fleet.regions)))
    return region_roles(
        records,
        address_regions or {},
        primary_databases(snapshot, remembered or {}),
        regions,
        dns_error=dns_error,
    )


def primary_databases(snapshot: Snapshot, remembered: Mapping[str, str]) -> dict[str, str]:
    """Database name -> region, for those called primary by the best source that names
    any: their agents now, else what they last reported, else their tags."""
    dbs = [i for i in snapshot.fleet if i.role is Role.DATABASE]
    sources: tuple[Callable[[Instance], str], ...] = (
        lambda i: reported_role(snapshot, i.id),
        lambda i: remembered.get(i.id, ""),
        lambda i: i.tag(DB_ROLE_TAG) or "",
    )
    for role_of in sources:
        found = {i.name or i.id: i.region for i in dbs if normal_role(role_of(i)) == "primary"}
        if found:
            return found
    return {}


def knows_serving(roles: RegionRoles) -> bool:
    return roles.serving is not None or roles.dns_region is not None or bool(roles.database_regions)


def is_standby(roles: RegionRoles, region: str) -> bool:
    """Losing `region` loses DR capacity, not the service (module docstring)."""
    return knows_serving(roles) and not roles.is_serving(region)


def standby_regions(roles: RegionRoles) -> tuple[str, ...]:
    """The region a failover would move to, when the model names one."""
    return (roles.standby,) if roles.standby else ()
