"""The daemon's view of the serving region: the public name's records plus the databases,
and every way reading the records can fail shown beside what the databases say."""

from __future__ import annotations

from drwatch.model.regions import AddressBook, Agreement, DnsRecord
from drwatch.observe.regions import RegionWatch, learn_addresses
from drwatch.providers.base import AddressInfo
from drwatch.providers.dns import NullDns
from drwatch.providers.fake_dns import FakeDns
from tests.scenarios.world import World, iid

ZONE, NAME = "example.test.", "www.example.test."
REGIONS = ["us-east-1", "eu-west-1"]


def _dns() -> FakeDns:
    return FakeDns(
        zones={
            ZONE: [
                DnsRecord(NAME, "A", ("198.51.100.7",), failover="PRIMARY", set_id="p"),
                DnsRecord(NAME, "A", ("203.0.113.5",), failover="SECONDARY", set_id="s"),
            ]
        }
    )


def _book() -> AddressBook:
    book = AddressBook()
    eips = [
        AddressInfo("eipalloc-1", "us-east-1", "198.51.100.7", instance_id=iid("lb-1")),
        AddressInfo("eipalloc-2", "eu-west-1", "203.0.113.5", instance_id=iid("lb-eu-1")),
    ]
    learn_addresses(book, World.healthy().snapshot(), eips)
    return book


async def test_records_and_the_primary_database_name_the_serving_region() -> None:
    watch = RegionWatch(_dns(), ZONE, NAME, REGIONS, _book())
    roles = await watch.read(World.healthy().snapshot(), {})
    assert roles.agreement is Agreement.AGREE
    assert (roles.serving, roles.standby) == ("us-east-1", "eu-west-1")
    assert watch.latest is roles


async def test_a_missing_zone_or_record_is_shown_and_the_databases_still_speak() -> None:
    snap = World.healthy().snapshot()
    no_zone = await RegionWatch(_dns(), "nope.test.", NAME, REGIONS, _book()).read(snap, {})
    assert "NoSuchHostedZone" in no_zone.dns_error
    assert (no_zone.agreement, no_zone.serving) == (Agreement.DATABASE_ONLY, "us-east-1")
    no_record = await RegionWatch(_dns(), ZONE, "api.example.test.", REGIONS, _book()).read(
        snap, {}
    )
    assert "no record named api.example.test." in no_record.dns_error


async def test_without_a_dns_section_nothing_is_read() -> None:
    watch = RegionWatch(NullDns(), "", "", REGIONS, AddressBook())
    assert not watch.configured
    roles = await watch.read(World.healthy().snapshot(), {})
    assert roles.dns_error == "no [dns] section in the config"


def test_addresses_are_learnt_from_load_balancers_and_elastic_ips() -> None:
    book = _book()
    assert book.regions["198.51.100.7"] == "us-east-1"
    assert book.regions["203.0.113.5"] == "eu-west-1"
