"""A clustered watcher's operator commands: applied to its own copy at once, queued for
etcd in order, and kept while etcd is away (drwatch.cluster.node.SharedControls)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drwatch.cluster.errors import EtcdUnavailableError
from drwatch.cluster.leader import Leadership, Role
from drwatch.cluster.node import SharedControls, not_acting_reason
from drwatch.cluster.store import Approval, PauseState
from drwatch.config import PolicyConfig, TimingConfig
from drwatch.cycle import Cycle, NullRunner
from drwatch.incidents import IncidentStore


class FlakyControls:
    """A ControlStore that fails while `down` and records what reached it."""

    def __init__(self) -> None:
        self.down = False
        self.log: list[tuple[str, object]] = []

    def _reach(self) -> None:
        if self.down:
            raise EtcdUnavailableError("etcd put failed: TimeoutError")

    async def pause_state(self) -> PauseState:
        return PauseState(False, "")

    async def set_pause(self, paused: bool, note: str) -> None:
        self._reach()
        self.log.append(("pause", paused))

    async def approve(self, incident_id: str, by: str, at: float) -> Approval:
        self._reach()
        self.log.append(("approve", incident_id))
        return Approval(incident_id, by, at)

    async def approval(self, incident_id: str) -> Approval | None:
        return None


@pytest.fixture
def controls(tmp_path: Path) -> SharedControls:
    store = IncidentStore(tmp_path)
    cycle = Cycle(PolicyConfig(), TimingConfig(), store, NullRunner(), 0.0)
    return SharedControls(cycle)


async def test_commands_apply_here_at_once_and_reach_etcd_in_order(
    controls: SharedControls,
) -> None:
    """pause then resume: this watcher is paused and resumed at once; etcd gets both, in
    order, at the next flush."""
    shared = FlakyControls()
    controls.pause(100.0, by="ops")
    paused_then = controls.paused
    controls.resume(101.0, by="ops")
    assert (paused_then, controls.paused) == (True, False)
    await controls.flush(shared)
    assert shared.log == [("pause", True), ("pause", False)]
    assert controls.outbox == []


async def test_commands_wait_for_etcd_and_none_is_lost(controls: SharedControls) -> None:
    """etcd away: the flush fails and the commands stay queued; once it answers, they go."""
    shared = FlakyControls()
    shared.down = True
    controls.pause(100.0, by="ops")
    with pytest.raises(EtcdUnavailableError):
        await controls.flush(shared)
    assert len(controls.outbox) == 1
    shared.down = False
    await controls.flush(shared)
    assert shared.log == [("pause", True)]


def test_a_follower_says_who_leads_and_since_when() -> None:
    lead = Leadership("w2", Role.FOLLOWER, "w1", 1_764_600_000.0, 7, "w1 leads")
    assert not_acting_reason(lead) == "follower: w1 leads since 14:40:00Z"
    down = Leadership("w2", Role.UNAVAILABLE, None, None, 0, "etcd unreachable: timeout")
    assert not_acting_reason(down) == "nobody acts: etcd unreachable: timeout"
