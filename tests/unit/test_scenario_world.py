"""The sandbox's world without servers: the daemon config it writes, UserData, targets."""

from __future__ import annotations

import tomllib
from pathlib import Path

from drwatch import config
from drwatch.sandbox.faults import TargetKind, check_target, target_kind
from drwatch.sandbox.hosts import UserData
from drwatch.sandbox.topology import default_topology
from drwatch.sandbox.watcher import WorldAddresses, render_config


def _rendered(tmp_path: Path) -> config.Config:
    secret = tmp_path / "agent.secret"
    where = WorldAddresses(
        listen="127.0.0.1:9480",
        state_dir=tmp_path / "daemon",
        secret_file=secret,
        endpoints={"us-east-1": "http://127.0.0.1:1001", "eu-west-1": "http://127.0.0.1:1002"},
        service_url="http://127.0.0.1:1003/app/healthz",
        canaries={"canary-1": "http://127.0.0.1:1004/", "canary-2": "http://127.0.0.1:1005/"},
    )
    return config.parse(tomllib.loads(render_config(default_topology(), where)))


def test_the_written_config_is_valid_and_describes_the_world(tmp_path: Path) -> None:
    """One group per topology group with its size; the EIP group carries the service URL."""
    cfg = _rendered(tmp_path)
    sizes = {g.name: (g.role.value, g.size) for g in cfg.groups}
    assert sizes == {
        "web-lb": ("load_balancer", 2),
        "app": ("app_server", 6),
        "db": ("database", 2),
        "db-eu": ("database", 1),
        "app-eu": ("app_server", 1),
        "lb-eu": ("load_balancer", 1),
    }
    web = cfg.group("web-lb")
    assert web is not None
    assert web.elastic_ip == "web-eip"
    assert web.service_url == "http://127.0.0.1:1003/app/healthz"
    assert web.select.tags == {"drwatch:group": "web-lb"}
    assert cfg.provider.endpoints["eu-west-1"] == "http://127.0.0.1:1002"
    assert [c.name for c in cfg.canaries] == ["canary-1", "canary-2"]
    assert cfg.timing.app.interval == 1.0
    assert cfg.timing.provider.interval == 2.0


def test_user_data_lines_configure_a_host() -> None:
    """KEY=value lines; unknown keys and comments are ignored."""
    ud = UserData.parse(
        "# boot\nDRWATCH_DB=db-2\nDRWATCH_BACKENDS=127.0.0.1:1,app-3\nOTHER=x\n"
        "DRWATCH_DB_ROLE=replica\n"
    )
    assert ud.database == "db-2"
    assert ud.backends == ["127.0.0.1:1", "app-3"]
    assert ud.db_role == "replica"
    assert UserData.parse("") == UserData()


def test_targets_are_known_by_kind() -> None:
    """Instances, zones, regions, volumes, snapshots and the watcher are told apart."""
    topo = default_topology()
    kinds = {
        t: target_kind(topo, t)
        for t in ("app-3", "us-east-1c", "eu-west-1", "db-1-data", "db-1-data-snap-1", "watcher")
    }
    assert kinds == {
        "app-3": TargetKind.INSTANCE,
        "us-east-1c": TargetKind.ZONE,
        "eu-west-1": TargetKind.REGION,
        "db-1-data": TargetKind.VOLUME,
        "db-1-data-snap-1": TargetKind.SNAPSHOT,
        "watcher": TargetKind.WATCHER,
    }
    assert target_kind(topo, "db-1-data-snap-4") is None
    assert check_target(topo, "corrupt-snapshot", "db-1-data-snap-3") is None
    assert check_target(topo, "heal", "nowhere") == "unknown target 'nowhere'"


def test_every_snapshot_of_a_volume_is_one_target_of_corrupt_snapshot() -> None:
    """`VOLUME/*` names every snapshot of that volume (drwatch's own backups among them,
    whose names a scenario cannot know); only for a volume of the topology."""
    topo = default_topology()
    assert target_kind(topo, "db-1-data/*") is TargetKind.SNAPSHOT
    assert check_target(topo, "corrupt-snapshot", "db-1-data/*") is None
    assert target_kind(topo, "nowhere/*") is None
    assert check_target(topo, "corrupt-volume", "db-1-data/*") is not None
