"""The serving-region model: DNS and the primary database, agreeing or not."""

from __future__ import annotations

from drwatch.model.regions import Agreement, DnsRecord, failover_pair, region_roles

REGIONS = ("us-east-1", "eu-west-1")
ADDRS = {"198.51.100.1": "us-east-1", "203.0.113.9": "eu-west-1"}
NAME = "www.example.test."


def _pair(primary: str = "198.51.100.1", secondary: str = "203.0.113.9") -> list[DnsRecord]:
    return [
        DnsRecord(NAME, "A", (primary,), failover="PRIMARY", set_id="primary", ttl=60),
        DnsRecord(NAME, "A", (secondary,), failover="SECONDARY", set_id="secondary", ttl=60),
    ]


def test_dns_and_database_agree_on_the_serving_region() -> None:
    """The PRIMARY record and the primary database both in us-east-1: it serves, eu-west-1
    stands by."""
    roles = region_roles(_pair(), ADDRS, {"db-1": "us-east-1"}, REGIONS)
    assert roles.agreement is Agreement.AGREE
    assert (roles.serving, roles.standby) == ("us-east-1", "eu-west-1")
    assert roles.is_serving("us-east-1")
    assert not roles.is_serving("eu-west-1")
    assert roles.detail.startswith("us-east-1 serves")


def test_a_disagreement_is_shown_not_guessed() -> None:
    """DNS says us-east-1, the only primary is in eu-west-1: no serving region, a split,
    and both regions count as serving for the failover rule."""
    roles = region_roles(_pair(), ADDRS, {"db-3": "eu-west-1"}, REGIONS)
    assert roles.agreement is Agreement.SPLIT
    assert roles.split
    assert roles.serving is None
    assert roles.standby is None
    assert roles.is_serving("us-east-1")
    assert roles.is_serving("eu-west-1")
    assert "split" in roles.detail
    assert "db-3 in eu-west-1" in roles.detail


def test_two_primaries_in_two_regions_are_a_split() -> None:
    """After a failover the old primary came back as a primary: shown as a split."""
    primaries = {"db-1": "us-east-1", "db-3": "eu-west-1"}
    roles = region_roles(_pair("203.0.113.9"), ADDRS, primaries, REGIONS)
    assert roles.split
    assert roles.serving is None
    assert roles.database_regions == ("eu-west-1", "us-east-1")


def test_after_a_failover_both_records_name_the_new_region() -> None:
    """PRIMARY and SECONDARY both point at eu-west-1 and db-3 is the primary: eu-west-1
    serves; the standby is the other configured region."""
    roles = region_roles(_pair("203.0.113.9"), ADDRS, {"db-3": "eu-west-1"}, REGIONS)
    assert (roles.serving, roles.standby) == ("eu-west-1", "us-east-1")


def test_dns_alone_or_database_alone_still_names_a_region() -> None:
    dns_only = region_roles(_pair(), ADDRS, {}, REGIONS)
    assert (dns_only.agreement, dns_only.serving) == (Agreement.DNS_ONLY, "us-east-1")
    db_only = region_roles([], ADDRS, {"db-1": "us-east-1"}, REGIONS, dns_error="no zone")
    assert (db_only.agreement, db_only.serving) == (Agreement.DATABASE_ONLY, "us-east-1")
    assert db_only.dns_error == "no zone"


def test_an_address_no_region_owns_leaves_dns_unknown() -> None:
    roles = region_roles(_pair("192.0.2.77"), ADDRS, {}, REGIONS)
    assert roles.dns_region is None
    assert roles.serving is None
    assert roles.agreement is Agreement.UNKNOWN


def test_records_drwatch_does_not_manage_are_named() -> None:
    """Alias, weighted, simple and TXT records are not switched, each with its reason."""
    alias = DnsRecord(NAME, "A", (), failover="PRIMARY", alias="lb.example.")
    weighted = DnsRecord(NAME, "A", ("1.2.3.4",), set_id="w", weight=10)
    simple = DnsRecord(NAME, "A", ("1.2.3.4",))
    txt = DnsRecord(NAME, "TXT", ('"hi"',), failover="PRIMARY")
    reasons = [r.unmanaged() for r in (alias, weighted, simple, txt)]
    assert all(reasons)
    assert "alias" in str(reasons[0])
    assert "weighted" in str(reasons[1])
    assert "simple" in str(reasons[2])
    assert "TXT" in str(reasons[3])
    assert failover_pair([alias, weighted, simple, txt]) == (None, None)
