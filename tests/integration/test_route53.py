"""Route53Dns against a real moto_server, and through the sandbox's fault front (throttling,
an outage mid-change): read the public name's records, switch them, follow the change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import boto3
import pytest

from drwatch.errors import ProviderError, ProviderThrottledError
from drwatch.model.regions import failover_pair
from drwatch.providers.route53 import Route53Dns
from drwatch.sandbox.front import Front
from drwatch.sandbox.listener import Gate
from tests.conftest import MotoServer
from tests.support.services import free_port

pytestmark = pytest.mark.services

ZONE, NAME = "example.test.", "www.example.test."


def seed(moto: MotoServer, *, weighted: bool = False) -> str:
    r53 = boto3.client("route53", region_name="us-east-1", endpoint_url=moto.url)
    zone: str = r53.create_hosted_zone(Name=ZONE, CallerReference="t")["HostedZone"]["Id"]
    if weighted:
        sets = [
            {"Name": NAME, "Type": "A", "SetIdentifier": s, "Weight": 50, "TTL": 60,
             "ResourceRecords": [{"Value": ip}]}
            for s, ip in (("a", "198.51.100.1"), ("b", "203.0.113.9"))
        ]  # fmt: skip
    else:
        sets = [
            {"Name": NAME, "Type": "A", "SetIdentifier": role.lower(), "Failover": role,
             "TTL": 60, "ResourceRecords": [{"Value": ip}]}
            for role, ip in (("PRIMARY", "198.51.100.1"), ("SECONDARY", "203.0.113.9"))
        ]  # fmt: skip
    sets.append({"Name": NAME, "Type": "TXT", "TTL": 60, "ResourceRecords": [{"Value": '"v=1"'}]})
    changes = [{"Action": "UPSERT", "ResourceRecordSet": s} for s in sets]
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": changes})
    return zone.removeprefix("/hostedzone/")


@pytest.fixture
async def dns(moto: MotoServer) -> AsyncIterator[Route53Dns]:
    client = Route53Dns(endpoint=moto.url, throttle_budget=1.0)
    yield client
    await client.aclose()


async def test_reads_the_failover_records_by_zone_name_and_by_id(
    moto: MotoServer, dns: Route53Dns
) -> None:
    zone_id = seed(moto)
    by_name = await dns.records(ZONE, NAME)
    by_id = await dns.records(zone_id, NAME)
    assert by_name == by_id
    primary, secondary = failover_pair(by_name)
    assert primary is not None
    assert primary.values == ("198.51.100.1",)
    assert secondary is not None
    assert secondary.values == ("203.0.113.9",)
    txt = [r for r in by_name if r.type == "TXT"]
    assert len(txt) == 1
    assert txt[0].unmanaged() is not None


async def test_a_switch_is_one_change_that_reaches_insync(
    moto: MotoServer, dns: Route53Dns
) -> None:
    seed(moto)
    primary, _ = failover_pair(await dns.records(ZONE, NAME))
    assert primary is not None
    change = await dns.upsert(ZONE, [replace(primary, values=("203.0.113.9",))])
    assert await dns.change_status(change) == "INSYNC"
    after, _ = failover_pair(await dns.records(ZONE, NAME))
    assert after is not None
    assert after.values == ("203.0.113.9",)


async def test_a_zone_that_does_not_exist_is_a_clear_error(
    moto: MotoServer, dns: Route53Dns
) -> None:
    seed(moto)
    with pytest.raises(ProviderError) as by_name:
        await dns.records("nope.test.", NAME)
    assert by_name.value.code == "NoSuchHostedZone"
    assert "nope.test." in str(by_name.value)
    with pytest.raises(ProviderError) as by_id:
        await dns.records("ZNOPE123", NAME)
    assert by_id.value.code == "NoSuchHostedZone"


async def test_a_record_that_does_not_exist_reads_as_none(
    moto: MotoServer, dns: Route53Dns
) -> None:
    seed(moto)
    assert await dns.records(ZONE, "api.example.test.") == []


async def test_weighted_records_are_read_as_not_managed(moto: MotoServer, dns: Route53Dns) -> None:
    seed(moto, weighted=True)
    found = await dns.records(ZONE, NAME)
    assert failover_pair(found) == (None, None)
    assert any("weighted" in (r.unmanaged() or "") for r in found)


@pytest.fixture
async def front(moto: MotoServer) -> AsyncIterator[Front]:
    async with aiohttp.ClientSession() as session:
        f = Front(moto.url, {"route53": free_port()}, Gate(), lambda: session)
        await f.start()
        yield f
        await f.stop()


async def test_throttling_is_retried_then_reported_as_throttled(
    moto: MotoServer, front: Front
) -> None:
    """The front answers Route 53's `Throttling`: retried within the budget, then a
    ProviderThrottledError (retryable) names it; once it stops, the same client works."""
    seed(moto)
    dns = Route53Dns(endpoint=front.endpoint("route53"), throttle_budget=0.5)
    try:
        front.faults.throttled.add("route53")
        with pytest.raises(ProviderThrottledError) as err:
            await dns.records(ZONE, NAME)
        assert err.value.retryable
        assert "Throttling" in str(err.value)
        front.faults.throttled.clear()
        assert len(await dns.records(ZONE, NAME)) == 3
    finally:
        await dns.aclose()


async def test_an_outage_mid_change_is_a_retryable_error_and_changes_nothing(
    moto: MotoServer, front: Front
) -> None:
    """Records read, then Route 53 fails (503) on the change: a retryable ProviderError,
    and the records read back unchanged."""
    seed(moto)
    dns = Route53Dns(endpoint=front.endpoint("route53"))
    try:
        primary, _ = failover_pair(await dns.records(ZONE, NAME))
        assert primary is not None
        front.faults.api_outage.add("route53")
        switched = replace(primary, values=("203.0.113.9",))
        with pytest.raises(ProviderError) as err:
            await dns.upsert(ZONE, [switched])
        assert err.value.retryable
        assert err.value.code == "ServiceUnavailable"
        front.faults.api_outage.clear()
        after, _ = failover_pair(await dns.records(ZONE, NAME))
        assert after == primary
    finally:
        await dns.aclose()
