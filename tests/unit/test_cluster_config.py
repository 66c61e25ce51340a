"""`[cluster]`: absent means one watcher on SQLite; present, its timing rules are checked
with their numbers in the message."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from drwatch import config
from drwatch.errors import ConfigError


def with_cluster(**cluster: Any) -> dict[str, Any]:
    return {
        "provider": {"regions": ["us-east-1"]},
        "agent": {"secret_file": "/etc/drwatch/agent-secret"},
        "groups": [
            {"name": "app", "role": "app_server", "select": {"tags": {"drwatch:group": "app"}}}
        ],
        "cluster": {"name": "w1", "endpoints": ["10.0.0.1:2379"], **cluster},
    }


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config.parse(data)
    return err.value.problems


def test_without_cluster_drwatch_is_one_watcher() -> None:
    """No [cluster] table: no cluster config at all (SQLite, as before)."""
    data = with_cluster()
    del data["cluster"]
    assert config.parse(data).cluster is None


def test_defaults_follow_the_lease() -> None:
    """TTL 10 s, keepalive every third of it, act for TTL - 2 s, quorum a majority of 3."""
    c = config.parse(with_cluster()).cluster
    assert c is not None
    assert (c.lease_ttl, c.request_timeout, c.safety_margin) == (10.0, 1.0, 2.0)
    assert c.keepalive_every == pytest.approx(10 / 3)
    assert c.acting_window == 8.0
    assert c.quorum == 2
    assert c.namespace == "drwatch"


def test_durations_and_quorum_are_read_as_given() -> None:
    c = config.parse(
        with_cluster(lease_ttl="15s", keepalive_interval="4s", watchers=5, vantage_quorum=4)
    ).cluster
    assert c is not None
    assert (c.lease_ttl, c.keepalive_every, c.quorum) == (15.0, 4.0, 4)


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        (
            {"keepalive_interval": "4s"},
            "2 x keepalive_interval (4s) + request_timeout (1s) = 9s must fit within "
            "lease_ttl - safety_margin (10s - 2s = 8s)",
        ),
        ({"lease_ttl": "2.5s"}, "lease_ttl (2.5s) must be whole seconds from 2s to 5m"),
        ({"lease_ttl": "1s"}, "lease_ttl (1s) must be whole seconds from 2s to 5m"),
        ({"safety_margin": "5s"}, "safety_margin (5s) must be under half of lease_ttl (10s)"),
        ({"vantage_quorum": 4}, "vantage_quorum (4) cannot exceed watchers (3)"),
        ({"username": "drwatch"}, "username and password_file go together"),
        ({"tls": {"ca_file": "/ca.pem", "cert_file": "/c.pem"}}, "cert_file and key_file go"),
        ({"endpoints": []}, "cluster.endpoints"),
        ({"endpoints": ["etcd1"]}, "is not host:port"),
        ({"incident_retention": "10m"}, "cluster.incident_retention"),
    ],
)
def test_rules_name_their_numbers(cluster: dict[str, Any], expected: str) -> None:
    found = problems_of(with_cluster(**cluster))
    assert any(expected in p for p in found), found


def test_every_cluster_problem_is_listed_with_its_path() -> None:
    """A mistake in [cluster] and one elsewhere: both, each with its dotted path."""
    data = with_cluster(watchers=0)
    data["policy"] = {"warmup": "soon"}
    found = problems_of(data)
    assert any(p.startswith("cluster.watchers") for p in found), found
    assert any(p.startswith("policy.warmup") for p in found), found


def test_the_examples_commented_cluster_table_is_valid() -> None:
    """Uncommented, the example's [cluster] table loads as written."""
    text = (Path(__file__).parents[2] / "config" / "drwatch.example.toml").read_text()
    # The table runs from "# [cluster]" to the first blank line (other tables follow).
    block = text[text.index("# [cluster]") :].split("\n\n", 1)[0].splitlines()
    lines = [ln[2:] for ln in block if ln.startswith("# ") and not ln.startswith("# # ")]
    data = with_cluster()
    data["cluster"] = tomllib.loads("\n".join(lines))["cluster"]
    c = config.parse(data).cluster
    assert c is not None
    assert (c.name, c.lease_ttl, c.keepalive_every, c.quorum) == ("watcher-a", 10.0, 3.0, 2)
    assert c.tls is not None


def test_the_corroborated_grace_defaults_to_the_provider_interval() -> None:
    """Shipped: dead_grace 30 s, and 10 s (one provider poll) for silence a quorum of
    watchers corroborates (bench/README.md, cluster_detection.py, has the numbers)."""
    cfg = config.parse(with_cluster())
    assert (cfg.policy.dead_grace, cfg.policy.corroborated_grace) == (30.0, 10.0)
    assert cfg.timing.provider.interval == 10.0


def test_the_corroborated_grace_leaves_the_provider_time_to_speak() -> None:
    """Below the provider's interval it is refused with the numbers, with [cluster] only
    (a single watcher never uses it)."""
    data = with_cluster()
    data["policy"] = {"corroborated_grace": "5s"}
    (problem,) = problems_of(data)
    assert "policy.corroborated_grace (5s) must be at least timing.provider.interval (10s)" in (
        problem
    )
    del data["cluster"]
    assert config.parse(data).policy.corroborated_grace == 5.0
