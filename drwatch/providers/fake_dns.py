"""An in-memory DNS provider for playbook tests (the real one: providers/route53.py,
tested against moto). It counts the changes it applied and can fail the way Route 53 does:
throttle, refuse a batch, or apply a change and lose the answer (a 5xx after the write).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from drwatch.errors import ProviderError
from drwatch.model.regions import DnsRecord

# An error whose code is this, queued in `fail_next`, applies the change and then fails.
LOST_ANSWER = "InternalFailure"


@dataclass
class FakeDns:
    zones: dict[str, list[DnsRecord]] = field(default_factory=dict)
    # Errors the next upserts raise, in order (LOST_ANSWER: applied, then raised).
    fail_next: list[ProviderError] = field(default_factory=list)
    # How many polls of a change stay PENDING before it is INSYNC.
    pending_polls: int = 1
    applied: list[tuple[DnsRecord, ...]] = field(default_factory=list)
    attempts: int = 0
    _polls: dict[str, int] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _zone(self, zone: str) -> list[DnsRecord]:
        if zone not in self.zones:
            raise ProviderError(f"no hosted zone named {zone}", code="NoSuchHostedZone")
        return self.zones[zone]

    async def records(self, zone: str, name: str) -> list[DnsRecord]:
        return [r for r in self._zone(zone) if r.name == name]

    async def upsert(self, zone: str, records: list[DnsRecord]) -> str:
        self.attempts += 1
        current = self._zone(zone)
        error = self.fail_next.pop(0) if self.fail_next else None
        if error is not None and error.code != LOST_ANSWER:
            raise error
        key = {(r.name, r.type, r.set_id) for r in records}
        self.zones[zone] = [r for r in current if (r.name, r.type, r.set_id) not in key]
        self.zones[zone] += records
        self.applied.append(tuple(records))
        if error is not None:
            raise error
        change = f"C{next(self._ids)}"
        self._polls[change] = self.pending_polls
        return change

    async def change_status(self, change_id: str) -> str:
        if change_id not in self._polls:
            raise ProviderError(f"no change {change_id}", code="NoSuchChange")
        left = self._polls[change_id]
        self._polls[change_id] = max(0, left - 1)
        return "PENDING" if left > 0 else "INSYNC"
