"""The configuration is validated whole: every problem is listed with its dotted path."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from drwatch import config
from drwatch.errors import ConfigError
from drwatch.model import Role

EXAMPLE = Path(__file__).parents[2] / "config" / "drwatch.example.toml"


def minimal() -> dict[str, Any]:
    return {
        "provider": {"regions": ["us-east-1"]},
        "agent": {"secret_file": "/etc/drwatch/agent-secret"},
        "groups": [
            {"name": "app", "role": "app_server", "select": {"tags": {"drwatch:group": "app"}}}
        ],
    }


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config.parse(data)
    return err.value.problems


def test_example_config_is_valid() -> None:
    """The shipped example loads, and its values arrive typed (durations in seconds)."""
    cfg = config.load(EXAMPLE)
    assert cfg.provider.regions == ["us-east-1", "eu-west-1"]
    assert cfg.timing.agent.interval == 5.0
    assert cfg.policy.dead_grace == 30.0
    assert cfg.objectives.data_classes["orders"].rpo == 300.0
    assert [g.role for g in cfg.groups] == [Role.LOAD_BALANCER, Role.APP_SERVER, Role.DATABASE]


def test_minimal_config_takes_safe_defaults() -> None:
    """Left out, the watcher listens on loopback only, and region scope waits for approval."""
    cfg = config.parse(minimal())
    assert cfg.watcher.listen.startswith("127.0.0.1:")
    assert cfg.policy.approval_required == ("region",)
    assert cfg.policy.dry_run is False


def test_three_mistakes_are_all_named_by_dotted_path() -> None:
    """Validation does not stop at the first problem."""
    data = minimal()
    data["watcher"] = {"nmae": "x"}
    data["timing"] = {"agent": {"interval": "1s", "timeout": "2s"}}
    data["groups"][0]["checks"] = [{"port": 70000}]
    problems = problems_of(data)
    joined = "\n".join(problems)
    assert "watcher.nmae: unknown key" in joined
    assert "timing.agent: timeout (2s) must be shorter than interval (1s)" in joined
    assert "groups[0].checks[0].port" in joined
    assert len(problems) == 3


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["groups"][0].update(role="app_servr"), "groups[0].role"),
        (lambda d: d["groups"][0].update(select={}), "groups[0].select: select needs tags"),
        (lambda d: d["provider"].update(regions=[]), "provider.regions"),
        (lambda d: d.pop("agent"), "agent: required key is missing"),
        (
            lambda d: d["provider"].update(endpoints={"eu-west-1": "http://x"}),
            "endpoints names regions that are not in regions: eu-west-1",
        ),
        (
            lambda d: d.update(canaries=[{"name": "c", "url": "ftp://x"}]),
            "canaries[0]: url must start with http:// or https://",
        ),
        (
            lambda d: d.update(canaries=[{"name": "c", "url": "http://x", "tcp": "a:1"}]),
            "canaries[0]: a canary has exactly one of url or tcp",
        ),
        (lambda d: d.update(policy={"cooldown": "ten minutes"}), "policy.cooldown"),
        (lambda d: d.update(policy={"blast_radius": 1.5}), "policy.blast_radius"),
        (lambda d: d["groups"][0].update(name="App Servers"), "groups[0].name"),
    ],
)
def test_single_field_mistakes(mutate: Any, expected: str) -> None:
    """Each kind of mistake is reported at its own path with a readable message."""
    data = minimal()
    mutate(data)
    assert any(expected in p for p in problems_of(data)), problems_of(data)


def test_cross_field_rules_give_their_numbers() -> None:
    """Rules that relate fields say the numbers, like Patroni's timing checks."""
    data = minimal()
    data["policy"] = {"dead_grace": "5s"}
    data["timing"] = {"provider": {"interval": "10s", "timeout": "5s"}}
    (problem,) = problems_of(data)
    assert "policy.dead_grace (5s) must be at least timing.provider.interval (10s)" in problem


def test_duplicate_group_names_and_unknown_data_class() -> None:
    """Group names are unique; a database's data class must be defined."""
    data = minimal()
    data["groups"].append(dict(data["groups"][0]))
    data["groups"].append(
        {"name": "db", "role": "database", "select": {"instance_ids": ["i-1"]}, "data_class": "x"}
    )
    problems = problems_of(data)
    assert any("'app' is used by more than one group" in p for p in problems)
    assert any("groups[2].data_class: 'x' is not defined" in p for p in problems)


def test_public_listen_requires_a_token() -> None:
    """Exposing the API beyond loopback without a token is refused."""
    data = minimal()
    data["watcher"] = {"listen": "0.0.0.0:9480"}
    assert any("watcher.api_token_file: required" in p for p in problems_of(data))


def test_max_latency_cannot_exceed_the_app_timeout() -> None:
    """A latency condition longer than the timeout could never fail as latency."""
    data = minimal()
    data["groups"][0]["checks"] = [{"port": 80, "max_latency": "3s"}]
    assert any(
        "groups[0].checks[0].max_latency (3s) exceeds timing.app.timeout (2s)" in p
        for p in problems_of(data)
    )


def test_not_toml_names_the_line(tmp_path: Path) -> None:
    """A parse error points at the line the parser stopped on."""
    path = tmp_path / "bad.toml"
    path.write_text('[watcher]\nname = "x"\nlisten = \n')
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert "line 3" in err.value.problems[0]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """An unreadable path is reported, not raised as a traceback."""
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.toml")


def test_example_documents_every_key() -> None:
    """Every key of the example has a comment line somewhere above it in its table."""
    text = EXAMPLE.read_text()
    data = tomllib.loads(text)
    assert set(data) >= {"watcher", "objectives", "provider", "agent", "timing", "policy"}
    lines = text.splitlines()
    for idx, line in enumerate(lines):
        stripped = line.strip()
        if "=" in stripped and not stripped.startswith(("#", "[")):
            above = [ln.strip() for ln in lines[max(0, idx - 6) : idx]]
            assert any(a.startswith("#") for a in above), f"undocumented key: {stripped}"


BASE_TOML = """
[provider]
regions = ["us-east-1"]
[agent]
secret_file = "/etc/drwatch/agent-secret"
[[groups]]
name = "app"
role = "app_server"
select = { tags = { "drwatch:group" = "app" } }
"""


def load_problems(tmp_path: Path, text: str | bytes) -> list[str]:
    path = tmp_path / "drwatch.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    return err.value.problems


@pytest.mark.parametrize(
    ("setting", "path"),
    [
        ("[policy]\ncooldown = nan", "policy.cooldown"),
        ("[policy]\nwarmup = nan", "policy.warmup"),
        ("[policy]\nwarmup = inf", "policy.warmup"),
        ("[policy]\ncooldown = '999999999999999999999d'", "policy.cooldown"),
        ("[policy]\nblast_radius = nan", "policy.blast_radius"),
        ("[policy]\ndisk_warn_percent = nan", "policy.disk_warn_percent"),
        ("[policy]\nmax_concurrent = 99999999999999999999", "policy.max_concurrent"),
        ("[timing.agent]\ninterval = nan\ntimeout = '1s'", "timing.agent.interval"),
        ("[objectives]\nrpo = -inf", "objectives.rpo"),
    ],
)
def test_non_finite_and_absurd_numbers_are_refused_by_path(
    tmp_path: Path, setting: str, path: str
) -> None:
    """`cooldown = nan` and `warmup = nan` used to pass (nan disabled the warm-up gate and
    later crashed the tick); every number must be finite and in range, named by path."""
    problems = load_problems(tmp_path, BASE_TOML + setting + "\n")
    assert any(p.startswith(f"{path}: ") for p in problems), problems


def test_non_utf8_file_is_a_clear_error_with_its_position(tmp_path: Path) -> None:
    """A config that is not UTF-8 names the line and byte, instead of a traceback."""
    text = BASE_TOML.encode() + b"[watcher]\nname = 'caf\xe9'\n"
    (problem,) = load_problems(tmp_path, text)
    line = BASE_TOML.count("\n") + 2
    assert "not UTF-8" in problem
    assert f"line {line}, column 12" in problem
    assert "0xe9" in problem


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    """More than a megabyte is not a config file: refused, not parsed."""
    text = BASE_TOML + "#" + "x" * (1024 * 1024) + "\n"
    (problem,) = load_problems(tmp_path, text)
    assert "larger than 1024 KiB" in problem


def test_deeply_nested_toml_is_a_clear_error(tmp_path: Path) -> None:
    """An array nested past the parser's recursion limit is a ConfigError, not a crash."""
    text = BASE_TOML + "x = " + "[" * 5000 + "]" * 5000 + "\n"
    (problem,) = load_problems(tmp_path, text)
    assert "nested too deeply" in problem


def test_integer_past_the_conversion_limit_is_a_clear_error(tmp_path: Path) -> None:
    """A 5,000-digit integer is past Python's int conversion limit: a ConfigError."""
    (problem,) = load_problems(tmp_path, BASE_TOML + "[policy]\nmax_concurrent = " + "9" * 5000)
    assert "not valid TOML" in problem


def test_unreadable_path_is_a_clear_error(tmp_path: Path) -> None:
    """A directory given as the config is named as unreadable."""
    with pytest.raises(ConfigError) as err:
        config.load(tmp_path)
    assert "cannot read" in err.value.problems[0]


def test_residency_names_known_data_classes_and_some_region() -> None:
    """[residency] rules: a data class that does not exist, or no region at all, is named
    by its dotted path; a rule for a known class loads."""
    data = minimal()
    data["objectives"] = {"data_classes": {"orders": {"rpo": "5m", "rto": "5m"}}}
    data["residency"] = {"orders": ["us-east-1"], "ordres": ["us-east-1"], "users": []}
    found = " ".join(problems_of(data))
    assert "residency.ordres: not a data class" in found
    assert "residency.users: not a data class" in found
    assert "residency.users: name at least one region" in found
    data["residency"] = {"orders": ["us-east-1", "eu-west-1"]}
    assert config.parse(data).residency == {"orders": ["us-east-1", "eu-west-1"]}
