"""The last discovered fleet survives a restart; a bad file is an empty fleet."""

from __future__ import annotations

from pathlib import Path

from drwatch.model.fleet import Fleet
from drwatch.observe.fleetfile import load_fleet, save_fleet
from tests.scenarios.world import World


def test_the_fleet_round_trips(tmp_path: Path) -> None:
    fleet = World.healthy().snapshot().fleet
    path = tmp_path / "fleet.json"
    save_fleet(path, fleet)
    assert load_fleet(path) == fleet
    assert not path.with_suffix(".tmp").exists()


def test_a_missing_or_broken_file_is_an_empty_fleet(tmp_path: Path) -> None:
    assert load_fleet(tmp_path / "none.json") == Fleet()
    bad = tmp_path / "bad.json"
    bad.write_text('{"instances": [{"id": 1}]}')
    assert load_fleet(bad) == Fleet()
