"""Which region serves, as the daemon sees it: the public name's records (Route 53) and
where the primary database is, folded by the pure `drwatch.model.regions.region_roles`.

`RegionWatch.read(snapshot)` reads the records once and returns `RegionRoles`; the daemon
calls it every discovery round and the API and status page show the latest. A DNS read
that fails is shown (`dns_error`) next to what the databases say; it never blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from drwatch.assess.regions import serving_regions
from drwatch.errors import ProviderError
from drwatch.model.fleet import Role
from drwatch.model.regions import AddressBook, DnsRecord, RegionRoles
from drwatch.model.snapshot import Snapshot
from drwatch.providers.base import AddressInfo
from drwatch.providers.dns import Dns


def learn_addresses(
    book: AddressBook, snapshot: Snapshot, addresses: Sequence[AddressInfo] = ()
) -> None:
    """Remember the region of every load balancer's public address and every Elastic IP."""
    for inst in snapshot.fleet:
        if inst.role is Role.LOAD_BALANCER:
            book.learn(inst.public_ip, inst.region)
    for addr in addresses:
        book.learn(addr.public_ip, addr.region)


class RegionWatch:
    """The latest `RegionRoles`, refreshed by `read`."""

    def __init__(
        self, dns: Dns, zone: str, name: str, regions: list[str], book: AddressBook
    ) -> None:
        self.dns = dns
        self._zone = zone
        self._name = name
        self._regions = regions
        self.book = book
        self.latest = RegionRoles(regions=tuple(regions), detail="not read yet")

    @property
    def configured(self) -> bool:
        return bool(self._zone and self._name)

    async def records(self) -> tuple[list[DnsRecord], str]:
        """The public name's records, or why they could not be read."""
        if not self.configured:
            return [], "no [dns] section in the config"
        try:
            found = await self.dns.records(self._zone, self._name)
        except ProviderError as err:
            return [], f"{err.code or 'error'}: {err}"
        if not found:
            return [], f"no record named {self._name} in hosted zone {self._zone}"
        return found, ""

    async def read(self, snapshot: Snapshot, known: Mapping[str, str]) -> RegionRoles:
        records, error = await self.records()
        self.latest = serving_regions(
            snapshot,
            known,
            self._regions,
            records=records,
            address_regions=self.book.regions,
            dns_error=error,
        )
        return self.latest
