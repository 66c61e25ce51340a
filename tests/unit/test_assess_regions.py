"""Which region serves, as assess asks: the primaries by their best source, and when a
lost region counts as a standby (DR capacity lost) rather than the serving one."""

from __future__ import annotations

import pytest

from drwatch.assess.regions import is_standby, primary_databases, serving_regions
from drwatch.model import Health, Layer
from drwatch.model.regions import DnsRecord
from tests.scenarios.world import World, iid

PRIMARY = {"checks": {"pg": {"kind": "postgres", "data": {"role": "primary"}}}}
ADDRS = {"198.51.100.1": "us-east-1", "203.0.113.9": "eu-west-1"}


def _dns(primary: str) -> list[DnsRecord]:
    return [DnsRecord("www.example.test.", "A", (primary,), failover="PRIMARY", set_id="p")]


def test_the_agents_word_outranks_memory_and_tags() -> None:
    """The primaries come from the best source that names any: agents now, else memory,
    else tags; a worse source never adds a second primary to a better one's."""
    world = World.healthy()  # tags: db-1 primary
    assert primary_databases(world.snapshot(), {}) == {"db-1": "us-east-1"}
    remembered = {iid("db-3"): "primary"}
    assert primary_databases(world.snapshot(), remembered) == {"db-3": "eu-west-1"}
    world.layer("db-2", Layer.AGENT, Health.UP, detail=PRIMARY)
    assert primary_databases(world.snapshot(), remembered) == {"db-2": "us-east-1"}


@pytest.mark.parametrize(
    ("tags", "records", "standby", "serving"),
    [
        # db-1 (us-east-1) is the primary and nothing else is known.
        ({"db-1": "primary"}, [], {"eu-west-1"}, set()),
        # Nothing known at all: every lost region is treated as serving.
        ({"db-1": None}, [], set(), set()),
        # DNS alone says us-east-1.
        ({"db-1": None}, _dns("198.51.100.1"), {"eu-west-1"}, set()),
        # Split: DNS at eu-west-1, the primary database in us-east-1: both count as serving.
        ({"db-1": "primary"}, _dns("203.0.113.9"), set(), {"us-east-1", "eu-west-1"}),
    ],
)
def test_a_lost_region_is_a_standby_only_when_known_not_to_serve(
    tags: dict[str, str | None],
    records: list[DnsRecord],
    standby: set[str],
    serving: set[str],
) -> None:
    """is_standby: something is known, and the region holds neither the DNS PRIMARY
    record nor a primary database."""
    world = World.healthy()
    for name, role in tags.items():
        world.db_role(name, role)
    roles = serving_regions(
        world.snapshot(), {}, ("us-east-1", "eu-west-1"), records=records, address_regions=ADDRS
    )
    found = {r for r in ("us-east-1", "eu-west-1") if is_standby(roles, r)}
    assert found == standby
    if serving:
        assert {r for r in serving if roles.is_serving(r)} == serving
