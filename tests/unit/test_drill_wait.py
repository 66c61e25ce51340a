"""The drill's wait for healthy: with a daemon, only the daemon's own word counts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from drwatch.sandbox.drill import wait_healthy


class _Api:
    """GET /api/v1/status as a sequence of answers: None (no answer in time), or the
    daemon's all-healthy verdict."""

    def __init__(self, *answers: bool | None) -> None:
        self.answers = list(answers)
        self.asked = 0

    async def healthy(self) -> bool | None:
        self.asked += 1
        return self.answers.pop(0) if self.answers else None


def _sandbox(*, with_watcher: bool, booted: bool = True) -> Any:
    host = SimpleNamespace(
        booted=booted, agent=SimpleNamespace(running=True), app=SimpleNamespace(running=True)
    )
    return SimpleNamespace(
        options=SimpleNamespace(with_watcher=with_watcher),
        watcher=SimpleNamespace(pid=4242),
        hosts={"i-1": host},
    )


async def test_a_daemon_that_does_not_answer_is_not_healthy_even_if_the_sandbox_is() -> None:
    """Every host booted, but the daemon's status timed out: the wait runs out instead
    of starting the faults before drwatch has seen the fleet."""
    api = _Api()
    assert await wait_healthy(_sandbox(with_watcher=True), api, 1.2) is False  # type: ignore[arg-type]
    assert api.asked >= 2


async def test_the_daemons_all_healthy_ends_the_wait() -> None:
    api = _Api(None, False, True)
    assert await wait_healthy(_sandbox(with_watcher=True), api, 10.0) is True  # type: ignore[arg-type]
    assert api.asked == 3


async def test_without_a_daemon_the_sandbox_says_when_it_is_healthy() -> None:
    assert await wait_healthy(_sandbox(with_watcher=False), _Api(), 5.0) is True  # type: ignore[arg-type]
    assert await wait_healthy(_sandbox(with_watcher=False, booted=False), _Api(), 0.6) is False  # type: ignore[arg-type]
