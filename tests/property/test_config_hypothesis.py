"""Property: whatever a config, agent config or drill scenario file holds, loading it
gives a valid value or a ConfigError whose every line names where (never another
exception, never a hang), and a valid value has only finite, bounded durations."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from drwatch import config
from drwatch.errors import ConfigError
from drwatch.sandbox.scenario import parse_scenario
from drwatch.sandbox.topology import default_topology
from drwatch.tomlconfig import read_toml
from drwatch.units import MAX_DURATION_S

TOPO = default_topology()

# What an operator (or a typo) might put where a duration or number goes.
DURATIONS = st.one_of(
    st.sampled_from(["30s", "5m", "1.5h", "7d", "500ms", "0s", "3650d", "3651d", "-1s", ""]),
    st.from_regex(r"\A[0-9]{1,25}(\.[0-9]{1,3})?(ms|s|m|h|d|y)?\Z", fullmatch=True),
    st.floats(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.booleans(),
    st.text(max_size=12),
)
SCALARS = st.one_of(DURATIONS, st.none(), st.lists(st.integers(), max_size=3))

POLICY_KEYS = ["warmup", "cooldown", "blast_window", "dead_grace", "verify_window", "boot_grace"]
NUMBER_KEYS = ["max_concurrent", "blast_radius", "zone_down_share", "disk_warn_percent"]


def base() -> dict[str, Any]:
    return {
        "provider": {"regions": ["us-east-1"]},
        "agent": {"secret_file": "/etc/drwatch/agent-secret"},
        "groups": [
            {"name": "app", "role": "app_server", "select": {"tags": {"drwatch:group": "app"}}}
        ],
    }


def assert_clear(err: ConfigError) -> None:
    assert err.problems
    for line in err.problems:
        assert ":" in line, line  # every problem names its place
        assert "Traceback" not in line


def finite_durations(cfg: config.Config) -> None:
    p = cfg.policy
    for value in (p.warmup, p.cooldown, p.blast_window, p.dead_grace, p.verify_window):
        assert math.isfinite(value)
        assert 0 <= value <= MAX_DURATION_S
    for layer in (cfg.timing.provider, cfg.timing.agent, cfg.timing.app, cfg.timing.canary):
        assert 0 < layer.timeout < layer.interval <= MAX_DURATION_S


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(POLICY_KEYS + NUMBER_KEYS), SCALARS, max_size=4),
    st.dictionaries(st.sampled_from(["interval", "timeout", "rise", "fall"]), SCALARS, max_size=4),
)
def test_any_policy_and_timing_values_load_or_are_named(
    policy: dict[str, Any], timing: dict[str, Any]
) -> None:
    """Random values in the policy and a timing layer: a Config or a ConfigError."""
    data = base()
    data["policy"] = policy
    data["timing"] = {"agent": timing}
    try:
        cfg = config.parse(data)
    except ConfigError as err:
        assert_clear(err)
        return
    finite_durations(cfg)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_as_a_config_file_load_or_are_named(raw: bytes) -> None:
    """Arbitrary bytes on disk (not UTF-8, not TOML, NULs): ConfigError, never a crash."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_bytes(raw)
        try:
            config.load(path)
        except ConfigError as err:
            assert_clear(err)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_as_a_toml_file_reads_or_is_named(text: str) -> None:
    """Arbitrary text (valid UTF-8) is TOML or a ConfigError with the place."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            read_toml(path)
        except ConfigError as err:
            assert_clear(err)


EVENT = st.fixed_dictionaries(
    {
        "at": DURATIONS,
        "do": st.sampled_from(["stop-instance", "slow-app", "flap-app", "fill-disk", "heal", "x"]),
        "target": st.sampled_from(["app-3", "us-east-1b", "watcher", "nope"]),
    },
    optional={"delay": SCALARS, "period": SCALARS, "percent": SCALARS},
)
SCENARIO = st.fixed_dictionaries(
    {"name": st.text(max_size=8), "duration": DURATIONS},
    optional={
        "event": st.lists(EVENT, max_size=3),
        "max_incidents": SCALARS,
        "objectives": st.fixed_dictionaries({}, optional={"rto": DURATIONS, "rpo": DURATIONS}),
        "expect_no_playbooks": SCALARS,
    },
)


@settings(max_examples=300, deadline=None)
@given(SCENARIO)
def test_any_drill_scenario_parses_or_is_named(data: dict[str, Any]) -> None:
    """Random scenarios: a Scenario whose times are finite and in order, or ConfigError."""
    try:
        scenario = parse_scenario(data, TOPO)
    except ConfigError as err:
        assert_clear(err)
        return
    assert 0 < scenario.duration <= 86400
    for ev in scenario.timeline():
        assert math.isfinite(ev.at)
        assert 0 <= ev.at <= scenario.duration
