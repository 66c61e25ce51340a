"""The agent's `[postgres]` section and `postgres` check: validated whole, with reasons."""

from __future__ import annotations

import pytest

from drwatch.agent import config as agent_config
from drwatch.agent.pgactions import database_actions
from drwatch.agent.postgres import Postgres, replica_lag
from drwatch.errors import ConfigError


def problems_of(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        agent_config.parse({"secret_file": "/unused", **data})
    return caught.value.problems


PG_CHECK = {"kind": "postgres", "name": "database"}


def test_a_postgres_check_needs_the_postgres_section() -> None:
    """Without [postgres] the check has nothing to connect to: refused at load."""
    problems = problems_of({"checks": [PG_CHECK]})
    assert any("needs a [postgres] section" in p for p in problems)


def test_at_most_one_postgres_check() -> None:
    """Two postgres checks would sweep the same server twice: refused, naming both."""
    second = {**PG_CHECK, "name": "database-2"}
    problems = problems_of({"postgres": {}, "checks": [PG_CHECK, second]})
    assert any("at most one postgres check (got database, database-2)" in p for p in problems)


def test_the_database_must_be_local_and_thresholds_ordered() -> None:
    """A remote host, reversed lag thresholds and a too-short freeze are each named."""
    problems = problems_of(
        {
            "postgres": {"host": "10.0.0.5", "max_freeze": "0s"},
            "checks": [{**PG_CHECK, "warning_lag": "10m", "critical_lag": "1m"}],
        }
    )
    text = "\n".join(problems)
    assert "host must be a socket directory or loopback" in text
    assert "max_freeze" in text
    assert "warning_lag must not be above critical_lag" in text


def test_builtin_database_actions_do_not_clash_with_command_actions() -> None:
    """`promote` enabled under [postgres] and also defined as a command: refused."""
    problems = problems_of(
        {
            "postgres": {"actions": ["promote"]},
            "actions": [{"name": "promote", "argv": ["/bin/true"]}],
        }
    )
    assert any("'promote' is also a built-in [postgres] action" in p for p in problems)


def test_unknown_database_actions_are_refused() -> None:
    """Only promote, follow, freeze and thaw are built in."""
    problems = problems_of({"postgres": {"actions": ["drop_everything"]}})
    assert any(p.startswith("postgres.actions[0]: Input should be 'promote'") for p in problems)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # caught up with the sender's WAL end: 0 whatever the replay timestamp's age
        (
            {
                "replay_position": 100,
                "receive_position": 100,
                "sender_position": 100,
                "replay_age_s": 3600.0,
            },
            (0.0, 0),
        ),
        # received but not replayed: behind by bytes, for as long as the last commit's age
        (
            {
                "replay_position": 100,
                "receive_position": 400,
                "sender_position": 400,
                "replay_age_s": 2.5,
            },
            (2.5, 300),
        ),
        # the sender said it has more than we received
        (
            {
                "replay_position": 100,
                "receive_position": 100,
                "sender_position": 900,
                "replay_age_s": 1.0,
            },
            (1.0, 800),
        ),
        # never streamed: nothing to compare against
        (
            {
                "replay_position": 100,
                "receive_position": None,
                "sender_position": None,
                "replay_age_s": 9.0,
            },
            (0.0, 0),
        ),
    ],
    ids=["caught-up-idle", "replay-behind", "receive-behind", "no-stream"],
)
def test_replica_lag_compares_positions_not_only_the_timestamp(
    row: dict[str, object], expected: tuple[float, int]
) -> None:
    """Lag comes from WAL positions; the replay timestamp only prices a real gap."""
    assert replica_lag(row) == expected


async def test_only_the_enabled_database_actions_exist() -> None:
    """An action not listed under [postgres] actions is not in the registry (a 404)."""
    cfg = agent_config.PostgresConfig.model_validate({"actions": ["promote", "thaw"]})
    async with Postgres(cfg, password="unused") as pg:
        assert set(database_actions(pg)) == {"promote", "thaw"}
        assert database_actions(None) == {}
