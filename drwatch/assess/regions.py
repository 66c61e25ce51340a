"""Which region serves and which stand by: pure, from the snapshot and what is remembered.

`region_roles` is the one place drwatch decides it. Until the serving-region model of
the DNS records lands (issue 11, item 1), the serving region is the one that holds the
primary database, by the best word available: what the agents' database checks report
now, else the role each database last reported (`drwatch.roles.RoleMemory`), else the
`drwatch:db-role` tags. When that names no single region, the first region configured
(`provider.regions[0]`, as `drwatch plan` says) serves; with no configured region
either, nobody knows, and a lost region is treated as if it served (a failover needs an
operator's approval by default, so not knowing never moves the service by itself).
Every other watched region is a standby.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from drwatch.model.fleet import DB_ROLE_TAG, Instance, Role
from drwatch.model.snapshot import Snapshot
from drwatch.roles import normal_role, reported_role


@dataclass(frozen=True, slots=True)
class RegionRoles:
    """`serving` is None when nobody can tell; `why` says how it was decided."""

    serving: str | None
    standby: tuple[str, ...] = ()
    why: str = ""

    def is_standby(self, region: str) -> bool:
        return self.serving is not None and region in self.standby


UNKNOWN_ROLES = RegionRoles(None, (), "no primary database known and no region configured")


def region_roles(
    snapshot: Snapshot,
    remembered: Mapping[str, str] | None = None,
    configured: Sequence[str] = (),
) -> RegionRoles:
    """The serving region and the standbys (module docstring)."""
    regions = tuple(dict.fromkeys((*configured, *snapshot.fleet.regions)))
    for source, found in _primary_regions(snapshot, remembered or {}):
        if len(found) == 1:
            (serving,) = found
            why = f"{serving} holds the primary database ({source})"
            return RegionRoles(serving, tuple(r for r in regions if r != serving), why)
        if len(found) > 1:
            break  # primaries in several regions by the same word: fall back to the config
    if configured:
        serving = configured[0]
        why = f"{serving} is the first region configured (no single primary database known)"
        return RegionRoles(serving, tuple(r for r in regions if r != serving), why)
    return UNKNOWN_ROLES


def _primary_regions(
    snapshot: Snapshot, remembered: Mapping[str, str]
) -> list[tuple[str, frozenset[str]]]:
    """The regions of the databases called primary by each source, best source first."""
    dbs = [i for i in snapshot.fleet if i.role is Role.DATABASE]
    sources: tuple[tuple[str, Callable[[Instance], str]], ...] = (
        ("reported by its agent", lambda i: reported_role(snapshot, i.id)),
        ("as its agent last reported", lambda i: remembered.get(i.id, "")),
        ("by its drwatch:db-role tag", lambda i: i.tag(DB_ROLE_TAG) or ""),
    )
    out = []
    for name, role_of in sources:
        found = frozenset(i.region for i in dbs if normal_role(role_of(i)) == "primary")
        if found:
            out.append((name, found))
    return out
