"""Real Alertmanager (Debian's) on loopback: an alert reaches every replica, then resolves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from drwatch.alerts import Alerter, AlertInput, AlertmanagerSink
from tests.support.operator_services import alertmanager, alertmanager_alerts
from tests.support.services import need_binary

pytestmark = pytest.mark.services


@pytest.fixture
def alertmanagers(tmp_path: Path) -> Iterator[list[str]]:
    binary = need_binary("prometheus-alertmanager")
    with ExitStack() as stack:
        yield [stack.enter_context(alertmanager(binary, tmp_path / f"am-{n}")) for n in (1, 2)]


async def _until_alerts(url: str, want: int, deadline: float = 20.0) -> list[dict[str, Any]]:
    end = time.monotonic() + deadline
    while True:
        got = await asyncio.to_thread(alertmanager_alerts, url)
        if len(got) == want or time.monotonic() > end:
            return got
        await asyncio.sleep(0.1)


async def test_zone_alert_arrives_then_resolves(alertmanagers: list[str]) -> None:
    """One zone alert reaches both replicas with drwatch's labels; after recovery it resolves."""
    sinks = [AlertmanagerSink(f"alertmanager-{i}", u) for i, u in enumerate(alertmanagers, 1)]
    alert = AlertInput(
        incident_id="inc-42",
        alertname="DrwatchZoneOutage",
        severity="critical",
        scope="zone",
        region="us-east-1",
        zone="us-east-1b",
        summary="zone us-east-1b is down (4 instances); replacing app-3, app-4 in us-east-1c",
        started_at=time.time() - 10,
    )
    async with Alerter(sinks, resend_interval=30.0, timeout=2.0, retry_min=0.1) as alerter:
        alerter.update([alert])
        for url in alertmanagers:
            (got,) = await _until_alerts(url, 1)
            assert got["labels"] == {
                "alertname": "DrwatchZoneOutage",
                "severity": "critical",
                "scope": "zone",
                "region": "us-east-1",
                "zone": "us-east-1b",
                "incident": "inc-42",
            }
            assert got["status"]["state"] == "active"
            assert "replacing app-3" in got["annotations"]["summary"]
        alerter.update([])
        for url in alertmanagers:
            assert await _until_alerts(url, 0) == []
