"""The deploy/ files pass Prometheus's own tools, and real Prometheus scrapes drwatch's metrics."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from drwatch.model import Scope
from drwatch.web.metrics import Metrics
from tests.support.services import free_port, need_binary, process, wait_http

pytestmark = pytest.mark.services

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _tool(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=DEPLOY)


@pytest.mark.parametrize(
    "args",
    [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "drwatch.rules.yml"],
        ["test", "rules", "drwatch.rules.test.yml"],
    ],
)
def test_promtool_accepts_deploy_files(args: list[str]) -> None:
    """promtool finds the scrape config and rules valid, and the rule unit tests pass."""
    result = _tool([need_binary("promtool"), *args])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_amtool_accepts_alertmanager_example() -> None:
    """The Alertmanager example, with its inhibitions, is a valid configuration."""
    result = _tool([need_binary("amtool"), "check-config", "alertmanager.yml"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 inhibit rules" in result.stdout


@pytest.fixture
async def metrics_server() -> AsyncIterator[int]:
    """drwatch's /metrics on loopback, with a zone incident open."""
    metrics = Metrics(max_check_timeout=2.0)
    metrics.set_incidents_active({Scope.ZONE: 1})
    metrics.record_tick(0.002, time.time())
    app = web.Application()
    metrics.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


def _prometheus_config(tmp: Path, target_port: int) -> Path:
    text = (DEPLOY / "prometheus.yml").read_text()
    for old, new in [
        ("127.0.0.1:9480", f"127.0.0.1:{target_port}"),
        ("scrape_interval: 15s", "scrape_interval: 1s"),
        ("evaluation_interval: 15s", "evaluation_interval: 1s"),
        ("scrape_timeout: 10s", "scrape_timeout: 1s"),
    ]:
        assert old in text, f"deploy/prometheus.yml no longer holds {old!r}"
        text = text.replace(old, new)
    shutil.copy(DEPLOY / "drwatch.rules.yml", tmp / "drwatch.rules.yml")
    (tmp / "prometheus.yml").write_text(text)
    return tmp / "prometheus.yml"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)["data"]


async def _until(url: str, check: Any, deadline: float = 30.0) -> Any:
    """Poll the API until `check` holds on its data; the last data at the deadline. An
    error answer (a 503 while a rule group is still loading) is polled past, not fatal."""
    end = time.monotonic() + deadline
    data: Any = None
    while True:
        try:
            data = await asyncio.to_thread(_get, url)
        except urllib.error.URLError as err:  # HTTPError included
            if time.monotonic() > end:
                raise AssertionError(f"{url}: {err} until the deadline") from None
        else:
            if check(data) or time.monotonic() > end:
                return data
        await asyncio.sleep(0.2)


async def test_prometheus_scrapes_drwatch_and_loads_rules(
    metrics_server: int, tmp_path: Path
) -> None:
    """Prometheus, with deploy/prometheus.yml, scrapes drwatch up and evaluates every rule."""
    binary = need_binary("prometheus")
    config = _prometheus_config(tmp_path, metrics_server)
    port = free_port()
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with process(argv) as proc:
        api = f"http://127.0.0.1:{port}/api/v1"
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/-/ready", 30.0, proc=proc)

        def target_up(data: Any) -> bool:
            return any(t["health"] == "up" for t in data["activeTargets"])

        targets = await _until(f"{api}/targets", target_up)
        assert target_up(targets), targets
        (target,) = targets["activeTargets"]
        assert target["labels"]["job"] == "drwatch"

        query = f"{api}/query?query=drwatch_incidents_active%7Bscope%3D%22zone%22%7D"
        result = await _until(query, lambda d: bool(d["result"]))
        assert result["result"][0]["value"][1] == "1"

        rules = await asyncio.to_thread(_get, f"{api}/rules")
        names = {r["name"] for g in rules["groups"] for r in g["rules"]}
        assert {"DrwatchDown", "DrwatchZoneIncidentOpen", "DrwatchCanariesFailing"} <= names
        assert {"DrwatchSchedulerLagging", "DrwatchRegionIncidentOpen"} <= names

        def zone_firing(data: Any) -> bool:
            return any(
                a["labels"]["alertname"] == "DrwatchZoneIncidentOpen" for a in data["alerts"]
            )

        alerts = await _until(f"{api}/alerts", zone_firing)
        assert zone_firing(alerts), alerts
