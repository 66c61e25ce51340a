"""Which region serves, and which stands by: a pure model over what DNS and the databases say.

The serving region is where the public name's DNS PRIMARY record points and where the
primary database is. Both are read, never assumed: when they disagree (a failover half
done by hand, an old primary back after a failover), the model says so and names no
serving region, so nothing downstream guesses.

    roles = region_roles(records, address_regions, primaries, configured_regions)
    roles.serving      # "us-east-1", or None when unknown or split
    roles.standby      # the region a failover would move to, or None
    roles.is_serving("us-east-1")   # holds the DNS PRIMARY record or the primary database

`address_regions` maps an address (an Elastic IP, a load balancer's public address) to
the region it belongs to; discovery builds it and keeps what it learnt while a region's
API still answered. `primaries` maps each database instance that reports (or last
reported) being a primary to its region.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

# Record types drwatch switches. Alias records and other routing policies are reported
# as not managed (see `DnsRecord.unmanaged`).
MANAGED_TYPES = frozenset({"A", "AAAA", "CNAME"})
PRIMARY = "PRIMARY"
SECONDARY = "SECONDARY"


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """One record set of the public name, as the DNS provider holds it."""

    name: str
    type: str
    values: tuple[str, ...]
    failover: str = ""  # PRIMARY | SECONDARY | "" (not a failover record)
    set_id: str = ""
    ttl: int | None = None
    alias: str = ""  # an alias target (drwatch does not switch those)
    weight: int | None = None
    health_check: str = ""

    def unmanaged(self) -> str | None:
        """Why drwatch will not switch this record, or None when it can."""
        if self.alias:
            return f"{self.type} {self.set_id or self.name} is an alias to {self.alias}"
        if self.type not in MANAGED_TYPES:
            return f"{self.type} records are not managed (only {', '.join(sorted(MANAGED_TYPES))})"
        if self.weight is not None:
            return f"{self.type} {self.set_id} is a weighted record (only failover records)"
        if self.failover not in (PRIMARY, SECONDARY):
            return f"{self.type} {self.name} is a simple record (only failover records)"
        return None


@dataclass
class AddressBook:
    """Which region each public address (Elastic IP, load balancer) belongs to, learnt
    while the region's API answered and kept after: a lost region's addresses are still
    known to be its own. Shared by the daemon's DNS watch and `region.failover`."""

    regions: dict[str, str] = field(default_factory=dict)

    def learn(self, address: str | None, region: str) -> None:
        if address:
            self.regions[address] = region


class Agreement(StrEnum):
    AGREE = "agree"  # DNS and the primary database name the same region
    SPLIT = "split"  # they name different regions, or two regions hold a primary
    DNS_ONLY = "dns_only"  # no database primary is known
    DATABASE_ONLY = "database_only"  # DNS could not be read or maps to no region
    UNKNOWN = "unknown"  # neither is known


@dataclass(frozen=True, slots=True)
class RegionRoles:
    """Which region serves, which stands by, and the evidence."""

    regions: tuple[str, ...]
    dns_region: str | None = None  # where the PRIMARY record points
    secondary_region: str | None = None  # where the SECONDARY record points
    database_regions: tuple[str, ...] = ()  # regions holding a primary database
    agreement: Agreement = Agreement.UNKNOWN
    serving: str | None = None
    standby: str | None = None
    detail: str = ""
    dns_error: str = ""
    records: tuple[DnsRecord, ...] = field(default=())

    @property
    def split(self) -> bool:
        return self.agreement is Agreement.SPLIT

    def is_serving(self, region: str) -> bool:
        """Does `region` hold the DNS PRIMARY record or a primary database? Losing such a
        region is a failover case; losing any other is lost DR capacity."""
        return region in (self.serving, self.dns_region) or region in self.database_regions

    def as_dict(self) -> dict[str, object]:
        """The shape the API and the status page show."""
        return {
            "serving": self.serving,
            "standby": self.standby,
            "dns_region": self.dns_region,
            "secondary_region": self.secondary_region,
            "database_regions": list(self.database_regions),
            "agreement": self.agreement.value,
            "split": self.split,
            "detail": self.detail,
            "dns_error": self.dns_error,
            "records": [
                {
                    "name": r.name,
                    "type": r.type,
                    "failover": r.failover,
                    "set_id": r.set_id,
                    "values": list(r.values),
                }
                for r in self.records
            ],
        }


def record_region(record: DnsRecord | None, address_regions: Mapping[str, str]) -> str | None:
    """The region whose address the record carries (all its values must agree)."""
    if record is None or not record.values:
        return None
    found = {address_regions.get(v.rstrip(".")) for v in record.values}
    return found.pop() if len(found) == 1 else None


def failover_pair(records: Sequence[DnsRecord]) -> tuple[DnsRecord | None, DnsRecord | None]:
    """The PRIMARY and SECONDARY failover records among `records` (managed types only)."""
    managed = [r for r in records if r.unmanaged() is None]
    primary = next((r for r in managed if r.failover == PRIMARY), None)
    secondary = next((r for r in managed if r.failover == SECONDARY), None)
    return primary, secondary


def region_roles(
    records: Sequence[DnsRecord],
    address_regions: Mapping[str, str],
    primaries: Mapping[str, str],
    regions: Sequence[str],
    *,
    dns_error: str = "",
) -> RegionRoles:
    """Serving and standby regions from the records and the primaries (pure)."""
    primary, secondary = failover_pair(records)
    dns_region = record_region(primary, address_regions)
    secondary_region = record_region(secondary, address_regions)
    db_regions = tuple(sorted(set(primaries.values())))
    agreement, serving = _agreement(dns_region, db_regions)
    base = RegionRoles(
        regions=tuple(regions),
        dns_region=dns_region,
        secondary_region=secondary_region,
        database_regions=db_regions,
        agreement=agreement,
        serving=serving,
        dns_error=dns_error,
        records=tuple(records),
    )
    standby = _standby(base) if serving is not None else None
    return _with_detail(base, standby, primaries)


def _agreement(dns: str | None, dbs: tuple[str, ...]) -> tuple[Agreement, str | None]:
    if len(dbs) > 1:
        return Agreement.SPLIT, None
    db = dbs[0] if dbs else None
    if dns is not None and db is not None:
        return (Agreement.AGREE, dns) if dns == db else (Agreement.SPLIT, None)
    if dns is not None:
        return Agreement.DNS_ONLY, dns
    if db is not None:
        return Agreement.DATABASE_ONLY, db
    return Agreement.UNKNOWN, None


def _standby(roles: RegionRoles) -> str | None:
    """Where the SECONDARY record points when that is another region; else the only other
    configured region."""
    if roles.secondary_region not in (None, roles.serving):
        return roles.secondary_region
    others = [r for r in roles.regions if r != roles.serving]
    return others[0] if len(others) == 1 else None


def _with_detail(
    roles: RegionRoles, standby: str | None, primaries: Mapping[str, str]
) -> RegionRoles:
    dns = roles.dns_region or ("unreadable" if roles.dns_error else "unknown")
    where = ", ".join(f"{name} in {region}" for name, region in sorted(primaries.items()))
    db = where or "no primary database known"
    if roles.agreement is Agreement.SPLIT:
        text = f"split: DNS PRIMARY points at {dns}; primary databases: {db}"
    elif roles.serving is None:
        text = f"serving region unknown: DNS PRIMARY {dns}; {db}"
    else:
        text = f"{roles.serving} serves (DNS PRIMARY: {dns}; {db})"
        text += f"; standby {standby}" if standby else "; no standby region"
    return RegionRoles(
        regions=roles.regions,
        dns_region=roles.dns_region,
        secondary_region=roles.secondary_region,
        database_regions=roles.database_regions,
        agreement=roles.agreement,
        serving=roles.serving,
        standby=standby,
        detail=text,
        dns_error=roles.dns_error,
        records=roles.records,
    )
