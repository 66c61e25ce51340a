"""The status page in real headless Chromium, against a canned API with a zone outage."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from drwatch.web.status import add_routes
from tests.support.services import free_port, need_binary

pytestmark = pytest.mark.services

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ZONE_INC = "inc-20261126T140501-3f9a"
DB_INC = "inc-20261126T140733-77c1"

TOPOLOGY = [
    ("lb-1", "load_balancer", "us-east-1", "us-east-1a"),
    ("lb-2", "load_balancer", "us-east-1", "us-east-1b"),
    ("app-1", "app_server", "us-east-1", "us-east-1a"),
    ("app-2", "app_server", "us-east-1", "us-east-1a"),
    ("app-3", "app_server", "us-east-1", "us-east-1b"),
    ("app-4", "app_server", "us-east-1", "us-east-1b"),
    ("app-5", "app_server", "us-east-1", "us-east-1c"),
    ("app-6", "app_server", "us-east-1", "us-east-1c"),
    ("db-1", "database", "us-east-1", "us-east-1a"),
    ("db-2", "database", "us-east-1", "us-east-1b"),
    ("db-3", "database", "eu-west-1", "eu-west-1a"),
    ("app-eu-1", "app_server", "eu-west-1", "eu-west-1a"),
    ("lb-eu-1", "load_balancer", "eu-west-1", "eu-west-1a"),
]


def _instance(n: int, name: str, role: str, region: str, zone: str) -> dict[str, Any]:
    down = zone == "us-east-1b"
    layer = "down" if down else "up"
    return {
        "id": f"i-{n:04d}",
        "name": name,
        "role": role,
        "region": region,
        "zone": zone,
        "state": "running",
        "health": {"provider": "unknown" if down else "up", "agent": layer, "app": layer},
    }


STATUS: dict[str, Any] = {
    "watcher": {"name": "drwatch-1", "state": "ok", "reason": "", "version": "0.1.0"},
    "summary": "started app_server.replace for app-3, app-4 (zone us-east-1b out)",
    "paused": False,
    "at": "2026-11-26T14:06:00Z",
    "instances": [_instance(n, *t) for n, t in enumerate(TOPOLOGY)],
    "zones": [{"name": "us-east-1b", "region": "us-east-1", "health": "down"}],
    "canaries": [{"name": "quad9", "health": "up"}, {"name": "cloudflare", "health": "up"}],
}

STEPS = [
    ("check_zone", "done", "14:05:09", "14:05:09", "us-east-1b impaired; placing in us-east-1c"),
    ("launch_replacement", "done", "14:05:10", "14:05:14", "i-0abc (app-3) in us-east-1c"),
    ("wait_healthy", "done", "14:05:14", "14:05:41", "agent and app up after 27s"),
    ("register_with_lb", "running", "14:05:41", None, ""),
]

INCIDENTS: dict[str, Any] = {
    "incidents": [
        {
            "id": ZONE_INC,
            "scope": "zone",
            "scope_key": "zone:us-east-1b",
            "finding": "zone_outage",
            "severity": "critical",
            "region": "us-east-1",
            "zone": "us-east-1b",
            "target_names": ["app-3", "app-4", "db-2", "lb-2"],
            "opened_at": "2026-11-26T14:05:01Z",
            "evidence": "4/4 instances silent on agent and app; us-east-1a and 1c answer",
            "state": "acting",
            "outcome": None,
            "playbook": "app_server.replace",
            "acted_at": "2026-11-26T14:05:08Z",
            "gate_reasons": [],
            "gate_history": [
                {"at": "2026-11-26T14:05:01Z", "reasons": ["warm-up: 4 s left"]},
            ],
            "steps": [
                {
                    "name": n,
                    "status": s,
                    "started_at": f"2026-11-26T{a}Z",
                    "ended_at": f"2026-11-26T{b}Z" if b else None,
                    "detail": d,
                }
                for n, s, a, b, d in STEPS
            ],
        },
        {
            "id": DB_INC,
            "scope": "instance",
            "scope_key": "instance:i-0009",
            "finding": "database_primary_down",
            "severity": "critical",
            "region": "us-east-1",
            "zone": "us-east-1b",
            "target_names": ["db-2"],
            "opened_at": "2026-11-26T14:07:33Z",
            "state": "open",
            "outcome": "awaiting_approval",
            "playbook": "database.recover",
            "gate_reasons": ["approval required for database.recover"],
            "steps": [],
        },
        {
            "id": "inc-20261126T120000-0001",
            "scope": "instance",
            "finding": "instance_stopped",
            "severity": "warning",
            "zone": "us-east-1c",
            "opened_at": "2026-11-26T12:00:00Z",
            "closed_at": "2026-11-26T12:01:10Z",
            "state": "ended",
            "outcome": "recovered",
        },
    ]
}


@pytest.fixture
async def page_url() -> AsyncIterator[str]:
    """The real status page routes plus a canned /api/v1 on loopback."""
    app = web.Application()
    add_routes(app)

    async def status(_r: web.Request) -> web.Response:
        return web.json_response(STATUS)

    async def incidents(_r: web.Request) -> web.Response:
        return web.json_response(INCIDENTS)

    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/api/v1/incidents", incidents)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()


async def _chromium(tmp: Path, *args: str) -> str:
    argv = [
        need_binary("chromium"),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--virtual-time-budget=5000",
        *args,
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(90):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def _text(dom: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


async def test_page_shows_zone_incident_steps_and_approvals(page_url: str, tmp_path: Path) -> None:
    """After its first poll the page shows the zone incident, its steps, and what waits."""
    dom = await _chromium(tmp_path, "--dump-dom", page_url)
    text = _text(dom)
    assert 'id="overall" class="badge outage"' in dom
    assert f'id="incident-{ZONE_INC}"' in dom
    assert "zone us-east-1b · zone_outage" in text
    for name, *_ in STEPS:
        assert name in text
    assert "i-0abc (app-3) in us-east-1c" in text
    assert "not acting: warm-up: 4 s left" in text
    # Approvals: the waiting incident, its gate reason and the command to approve it.
    assert f"drwatch approve {DB_INC}" in text
    assert "approval required for database.recover" in text
    # The grid: region, zone (marked down), role and per-layer health.
    assert 'class="zone down" data-zone="us-east-1b"' in dom
    assert 'title="app: down"' in dom
    assert "eu-west-1" in text
    assert "quad9: up" in text
    assert "recovered" in text


async def test_page_screenshot_on_a_phone(page_url: str, tmp_path: Path) -> None:
    """A phone-sized screenshot is produced by the test run (test-artifacts/status-page.png)."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    await _chromium(tmp_path, f"--screenshot={shot}", "--window-size=412,900", page_url)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    full = ARTIFACTS / "status-page-full.png"
    await _chromium(tmp_path, f"--screenshot={full}", "--window-size=412,2600", page_url)
    assert full.stat().st_size > 0


async def test_page_serves_no_third_party_assets(page_url: str) -> None:
    """Every asset is same-origin (no CDN) and the CSP forbids anything else."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(page_url) as resp:
        html = await resp.text()
        csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert not re.search(r"""(src|href)=["']https?://""", html)
