"""Route 53 through aiobotocore, behind the small `Dns` seam: read the public name's
records, switch its failover records in one change, and follow that change to INSYNC.

Only this module (and providers/aws.py) knows botocore. Errors leave as `ProviderError`
(`translate` from providers/aws.py), with Route 53's codes: `NoSuchHostedZone`,
`InvalidChangeBatch`, `Throttling`, `PriorRequestNotComplete` (a change still being
applied: retried like throttling).
"""

from __future__ import annotations

import asyncio
import random
import time
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from drwatch.errors import ProviderError, ProviderThrottledError, ProviderTimeoutError
from drwatch.model.regions import DnsRecord
from drwatch.providers.aws import THROTTLE_CODES, translate

RETRY_CODES = THROTTLE_CODES | {"PriorRequestNotComplete"}


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


class Route53Dns:
    """Route 53 (a global service: one client, its control plane's region)."""

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        profile: str | None = None,
        timeout: float = 10.0,
        throttle_budget: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self._session = AioSession(profile=profile)
        self._endpoint = endpoint
        self._config = AioConfig(
            connect_timeout=3.0,
            read_timeout=timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        self._call_timeout = timeout + 4.0
        self._budget = throttle_budget
        self._rng = rng or random.Random()
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()
        self._zone_ids: dict[str, str] = {}

    async def aclose(self) -> None:
        async with self._lock:
            self._client = None
            await self._stack.aclose()

    async def _get_client(self) -> Any:
        async with self._lock:
            if self._client is None:
                creator = self._session.create_client(
                    "route53",
                    region_name="us-east-1",
                    endpoint_url=self._endpoint,
                    config=self._config,
                )
                self._client = await self._stack.enter_async_context(creator)
            return self._client

    async def _call(self, op: str, **params: Any) -> dict[str, Any]:
        """One call with translated errors; throttling and a change still in progress are
        retried with full jitter within the budget."""
        client = await self._get_client()
        deadline = time.monotonic() + self._budget
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(self._call_timeout):
                    result: dict[str, Any] = await getattr(client, op)(**params)
                    return result
            except TimeoutError:
                raise ProviderTimeoutError(
                    f"route53 {op}: no answer within {self._call_timeout:g}s"
                ) from None
            except (ClientError, BotoCoreError, ResponseParserError) as err:
                error = translate(err, region="route53", op=op)
                delay = self._rng.uniform(0, min(4.0, 0.2 * 2**attempt))
                if error.code not in RETRY_CODES or time.monotonic() + delay > deadline:
                    if error.code in RETRY_CODES:
                        raise ProviderThrottledError(
                            f"route53 {op}: {error.code} after {attempt + 1} attempts",
                            code=error.code,
                        ) from err
                    raise error from err
                attempt += 1
                await asyncio.sleep(delay)

    async def zone_id(self, zone: str) -> str:
        """The hosted zone's id from its id (`Z...`, `/hostedzone/Z...`) or its name."""
        if zone in self._zone_ids:
            return self._zone_ids[zone]
        if "." not in zone.rstrip(".") or zone.startswith("/hostedzone/"):
            found = zone.removeprefix("/hostedzone/")
            await self._call("get_hosted_zone", Id=found)
        else:
            found = await self._zone_by_name(_fqdn(zone))
        self._zone_ids[zone] = found
        return found

    async def _zone_by_name(self, name: str) -> str:
        raw = await self._call("list_hosted_zones_by_name", DNSName=name, MaxItems="1")
        for z in raw.get("HostedZones", []):
            if z.get("Name") == name:
                return str(z["Id"]).removeprefix("/hostedzone/")
        raise ProviderError(f"no hosted zone named {name}", code="NoSuchHostedZone")

    async def records(self, zone: str, name: str) -> list[DnsRecord]:
        zid = await self.zone_id(zone)
        fqdn = _fqdn(name)
        out: list[DnsRecord] = []
        params: dict[str, Any] = {"HostedZoneId": zid, "StartRecordName": fqdn}
        while True:
            raw = await self._call("list_resource_record_sets", **params)
            sets = raw.get("ResourceRecordSets", [])
            out += [_record(r) for r in sets if r.get("Name") == fqdn]
            if not raw.get("IsTruncated") or any(r.get("Name") != fqdn for r in sets):
                return out
            params = {
                "HostedZoneId": zid,
                "StartRecordName": raw["NextRecordName"],
                "StartRecordType": raw["NextRecordType"],
                **(
                    {"StartRecordIdentifier": raw["NextRecordIdentifier"]}
                    if raw.get("NextRecordIdentifier")
                    else {}
                ),
            }

    async def upsert(self, zone: str, records: list[DnsRecord]) -> str:
        zid = await self.zone_id(zone)
        changes = [{"Action": "UPSERT", "ResourceRecordSet": _aws_record(r)} for r in records]
        raw = await self._call(
            "change_resource_record_sets",
            HostedZoneId=zid,
            ChangeBatch={"Comment": "drwatch region.failover", "Changes": changes},
        )
        return str(raw["ChangeInfo"]["Id"]).removeprefix("/change/")

    async def change_status(self, change_id: str) -> str:
        raw = await self._call("get_change", Id=change_id)
        return str(raw["ChangeInfo"]["Status"])


def _record(raw: dict[str, Any]) -> DnsRecord:
    alias = raw.get("AliasTarget") or {}
    weight = raw.get("Weight")
    return DnsRecord(
        name=str(raw.get("Name", "")),
        type=str(raw.get("Type", "")),
        values=tuple(str(v["Value"]) for v in raw.get("ResourceRecords", [])),
        failover=str(raw.get("Failover", "")),
        set_id=str(raw.get("SetIdentifier", "")),
        ttl=int(raw["TTL"]) if "TTL" in raw else None,
        alias=str(alias.get("DNSName", "")),
        weight=int(weight) if weight is not None else None,
        health_check=str(raw.get("HealthCheckId", "")),
    )


def _aws_record(r: DnsRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Name": r.name,
        "Type": r.type,
        "TTL": r.ttl if r.ttl is not None else 60,
        "ResourceRecords": [{"Value": v} for v in r.values],
    }
    if r.set_id:
        out["SetIdentifier"] = r.set_id
    if r.failover:
        out["Failover"] = r.failover
    if r.health_check:
        out["HealthCheckId"] = r.health_check
    return out
