"""The drill's `approve` verb names the region, zone or instance of an open incident."""

from __future__ import annotations

import pytest

from drwatch.errors import ConfigError
from drwatch.sandbox.faults import check_target
from drwatch.sandbox.scenario import parse_scenario
from drwatch.sandbox.topology import default_topology


@pytest.mark.parametrize("target", ["us-east-1", "us-east-1a", "app-3"])
def test_approve_takes_a_region_a_zone_or_an_instance(target: str) -> None:
    assert check_target(default_topology(), "approve", target) is None


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("db-1-data", "approve needs a region, zone or instance, not volume"),
        ("watcher", "approve needs a region, zone or instance, not watcher"),
        ("mars-1", "unknown target 'mars-1'"),
    ],
)
def test_approve_refuses_anything_else(target: str, problem: str) -> None:
    assert problem in str(check_target(default_topology(), "approve", target))


def test_a_scenario_with_approve_and_a_service_region_parses() -> None:
    sc = parse_scenario(
        {
            "name": "region",
            "duration": "30s",
            "expect_service_region": "eu-west-1",
            "event": [
                {"at": "1s", "do": "region-outage", "target": "us-east-1"},
                {"at": "5s", "do": "approve", "target": "us-east-1"},
            ],
        },
        default_topology(),
    )
    assert [e.do for e in sc.timeline()] == ["region-outage", "approve"]
    assert sc.expect_service_region == "eu-west-1"
    with pytest.raises(ConfigError, match="approve needs a region, zone or instance"):
        parse_scenario(
            {
                "name": "bad",
                "duration": "30s",
                "event": [{"at": "1s", "do": "approve", "target": "db-1-data"}],
            },
            default_topology(),
        )
