"""The agent's real local checks (http, tcp, process, disk_free) against this machine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil
import pytest
from aiohttp import web

from drwatch.agent import config as agent_config
from drwatch.agent.checks import build_checks, run_check, run_checks
from drwatch.agent.server import serving
from drwatch.agent.wire import CheckResult, Status
from tests.support.services import refused_port


def checks_cfg(*checks: dict[str, object]) -> agent_config.AgentConfig:
    return agent_config.parse(
        {"secret_file": "/unused", "instance_id": "i-1", "checks": list(checks)}
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def health_port() -> AsyncIterator[int]:
    """A local app: /ok answers 200, /broken 500."""

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def broken(_request: web.Request) -> web.Response:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/broken", broken)
    async with serving(app, "127.0.0.1", 0) as port:
        yield port


async def run_all(
    cfg: agent_config.AgentConfig, session: aiohttp.ClientSession
) -> dict[str, CheckResult]:
    return await run_checks(build_checks(cfg, session), timeout_s=2.0)


async def test_http_check_judges_the_status(
    session: aiohttp.ClientSession, health_port: int
) -> None:
    """200 where 200 is expected is ok; a 500 is critical and says what it wanted."""
    base = f"http://127.0.0.1:{health_port}"
    cfg = checks_cfg(
        {"kind": "http", "name": "good", "url": f"{base}/ok"},
        {"kind": "http", "name": "bad", "url": f"{base}/broken"},
    )
    results = await run_all(cfg, session)
    assert results["good"].status is Status.OK
    assert results["good"].data["status_code"] == 200
    assert (results["bad"].status, results["bad"].detail) == (
        Status.CRITICAL,
        "status 500, expected 200",
    )


async def test_tcp_check_connects_or_is_critical(
    session: aiohttp.ClientSession, health_port: int
) -> None:
    """An open port is ok; a closed one is critical."""
    with refused_port() as closed:
        cfg = checks_cfg(
            {"kind": "tcp", "name": "open", "address": f"127.0.0.1:{health_port}"},
            {"kind": "tcp", "name": "closed", "address": f"127.0.0.1:{closed}"},
        )
        results = await run_all(cfg, session)
    assert results["open"].status is Status.OK
    assert results["closed"].status is Status.CRITICAL
    assert results["closed"].detail.startswith("connect to 127.0.0.1:")


async def test_process_check_counts_processes_by_name(session: aiohttp.ClientSession) -> None:
    """This test's own process is found; a name nobody runs is critical."""
    me = psutil.Process().name()
    cfg = checks_cfg(
        {"kind": "process", "name": "me", "process": me},
        {"kind": "process", "name": "ghost", "process": "no-such-process-xyz"},
    )
    results = await run_all(cfg, session)
    assert results["me"].status is Status.OK
    assert int(results["me"].data["count"]) >= 1
    assert results["ghost"].status is Status.CRITICAL


async def test_disk_free_check_applies_its_thresholds(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Free space at or below the critical share is critical; above the warning share, ok."""
    usage = psutil.disk_usage(str(tmp_path))
    free = 100.0 * usage.free / usage.total
    never = {"warning_free_percent": 0, "critical_free_percent": 0}
    always = {"warning_free_percent": 100, "critical_free_percent": 100}
    warn_only = {"warning_free_percent": 100, "critical_free_percent": 0}
    cfg = checks_cfg(
        {"kind": "disk_free", "name": "roomy", "path": str(tmp_path), **never},
        {"kind": "disk_free", "name": "full", "path": str(tmp_path), **always},
        {"kind": "disk_free", "name": "tight", "path": str(tmp_path), **warn_only},
        {"kind": "disk_free", "name": "gone", "path": str(tmp_path / "missing")},
    )
    results = await run_all(cfg, session)
    assert 0 < free < 100
    assert results["roomy"].status is Status.OK
    assert results["full"].status is Status.CRITICAL
    assert results["tight"].status is Status.WARNING
    assert results["gone"].status is Status.UNKNOWN


class Exploding:
    kind = "database"

    async def run(self) -> CheckResult:
        raise RuntimeError("psql not found")


class Hanging:
    kind = "database"

    async def run(self) -> CheckResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_broken_or_hanging_check_is_unknown() -> None:
    """A check that raises or never returns is reported unknown, with the reason."""
    crashed = await run_check("db", Exploding(), timeout_s=1.0)
    hung = await run_check("db", Hanging(), timeout_s=0.05)
    assert (crashed.status, crashed.detail) == (
        Status.UNKNOWN,
        "check failed: RuntimeError('psql not found')",
    )
    assert (hung.status, hung.detail) == (Status.UNKNOWN, "timeout after 50ms")
