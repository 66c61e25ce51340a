"""The seam to the DNS provider: the public name's records, read and switched.

No botocore type crosses it; errors arrive as `drwatch.errors.ProviderError`. The AWS
adapter is `drwatch.providers.route53.Route53Dns`.
"""

from __future__ import annotations

from typing import Protocol

from drwatch.errors import ProviderError
from drwatch.model.regions import DnsRecord


class Dns(Protocol):
    """What drwatch reads and changes of the public name."""

    async def records(self, zone: str, name: str) -> list[DnsRecord]:
        """Every record set of `name` in the hosted zone `zone` (its id or its name).
        Raises ProviderError NoSuchHostedZone when the zone does not exist."""

    async def upsert(self, zone: str, records: list[DnsRecord]) -> str:
        """Write `records` in one change (all or nothing); returns the change id."""

    async def change_status(self, change_id: str) -> str:
        """PENDING or INSYNC."""


class NullDns:
    """No [dns] configured: nothing to read, nothing to switch."""

    async def records(self, zone: str, name: str) -> list[DnsRecord]:
        raise ProviderError("no [dns] section in the config", code="DnsNotConfigured")

    async def upsert(self, zone: str, records: list[DnsRecord]) -> str:
        raise ProviderError("no [dns] section in the config", code="DnsNotConfigured")

    async def change_status(self, change_id: str) -> str:
        raise ProviderError("no [dns] section in the config", code="DnsNotConfigured")
