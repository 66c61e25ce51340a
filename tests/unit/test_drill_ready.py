"""When a drill may start: with the sandbox's own watcher, only the daemon's word counts."""

from __future__ import annotations

import pytest

from drwatch.sandbox.drill import ready


def _never() -> bool:
    raise AssertionError("the sandbox's own view must not be consulted")


@pytest.mark.parametrize(
    ("daemon", "watching", "expected"),
    [
        (None, True, False),  # the daemon's API not up yet: not ready, however the hosts look
        (False, True, False),  # the daemon answers, not every target up yet
        (True, True, True),
        (True, False, False),  # the daemon process is gone (a stale answer)
    ],
)
def test_with_its_own_watcher_only_the_daemon_says_healthy(
    daemon: bool | None, watching: bool, expected: bool
) -> None:
    """A sandbox whose hosts all answer is not enough: the daemon may not have seen one of
    them up yet, and a fault applied then meets targets it still takes for booting."""
    assert ready(daemon, own_watcher=True, watching=watching, sandbox=_never) is expected


@pytest.mark.parametrize(
    ("daemon", "sandbox", "expected"),
    [
        (None, True, True),  # no status API at all: the sandbox's own view
        (None, False, False),
        (False, True, False),  # an API answers: its word wins
        (True, False, True),
    ],
)
def test_without_its_own_watcher_an_answering_api_wins(
    daemon: bool | None, sandbox: bool, expected: bool
) -> None:
    """A drill against a daemon the sandbox did not start takes that daemon's word when its
    API answers, and the sandbox's own view when nothing answers."""
    got = ready(daemon, own_watcher=False, watching=False, sandbox=lambda: sandbox)
    assert got is expected
