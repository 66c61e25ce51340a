"""Absurd agent answers are `unknown` with the reason, never an exception out of the check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import aiohttp
import pytest

from drwatch.agent.server import create_app, serving
from drwatch.agent.wire import Memory
from drwatch.model.observation import Health
from drwatch.observe.agent import AgentClient
from tests.component.test_agent_client import client_cfg, instance_at
from tests.component.test_agent_server import SECRET, FakeHost, agent_cfg

HUGE = 10**4000  # 4,001 digits: under Python's 4,300-digit limit, so json.loads accepts it


class AbsurdHost(FakeHost):
    """A host (or a compromised agent) that reports numbers no machine has."""

    def __init__(self, *, cpu: float = 3.5, total: int = 8 << 30, used: float = 40.0) -> None:
        super().__init__(used_percent=used)
        self._cpu, self._total = cpu, total

    def cpu_percent(self) -> float:
        return self._cpu

    def memory(self) -> Memory:
        return Memory(total_bytes=self._total, available_bytes=1 << 30, used_percent=25.0)


@pytest.fixture
async def client() -> AsyncIterator[tuple[AgentClient, AsyncExitStack]]:
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        yield AgentClient(client_cfg(max_response_bytes=64 * 1024), SECRET, session), stack


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        # This one raised OverflowError out of the check before.
        (AbsurdHost(cpu=HUGE), "cpu_percent: number out of range (4001 digits)"),
        (AbsurdHost(total=HUGE), "memory.total_bytes: number out of range"),
        (AbsurdHost(total=-1), "facts.memory.total_bytes: integer out of range"),
        (AbsurdHost(cpu=250.0), "facts.cpu_percent: 250 is outside 0..100"),
    ],
)
async def test_absurd_numbers_from_the_real_agent_are_unknown_with_the_reason(
    client: tuple[AgentClient, AsyncExitStack], host: AbsurdHost, reason: str
) -> None:
    """The real agent serving absurd numbers: the observation is UNKNOWN and says why."""
    agent_client, stack = client
    app = create_app(agent_cfg(), host, {}, {}, secret=SECRET, hostname="db-2")
    port = await stack.enter_async_context(serving(app, "127.0.0.1", 0))
    obs = await agent_client.check(instance_at(port), timeout_s=5.0)
    assert obs.health is Health.UNKNOWN
    assert obs.reason.startswith("malformed facts: ")
    assert reason in obs.reason
    assert obs.detail == {}
