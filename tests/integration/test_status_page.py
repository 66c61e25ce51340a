"""The status page in real headless Chromium, against the real API with a zone outage."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from drwatch.act.approvals import StepApprovals
from drwatch.incidents import IncidentStore
from drwatch.web import approvals as approvals_web
from drwatch.web import backups as backups_web
from tests.support.operator_services import chromium, dom_text
from tests.support.operator_world import (
    DB_INC,
    NOW,
    READINESS_EVIDENCE,
    STEPS,
    ZONE_INC,
    build_app,
)
from tests.support.services import free_port

pytestmark = pytest.mark.services

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
async def page_url(tmp_path: Path) -> AsyncIterator[str]:
    """The status page and the real API over a world with zone us-east-1b out."""
    runner = web.AppRunner(build_app(tmp_path / "state"))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()


async def test_page_shows_zone_incident_steps_and_approvals(page_url: str, tmp_path: Path) -> None:
    """After its first poll the page shows the zone incident, its steps, and what waits."""
    dom = await chromium(tmp_path, "--dump-dom", page_url)
    text = dom_text(dom)
    assert 'id="overall" class="badge outage"' in dom
    assert f'id="incident-{ZONE_INC}"' in dom
    assert "zone us-east-1b · zone_outage" in text
    assert "app-3, app-4, db-2, lb-2" in text
    for name, *_ in STEPS:
        assert name in text
    assert "i-0abc (app-3) in us-east-1c" in text
    assert "not acting: warm-up: 4 s left" in text
    # Approvals: the waiting incident, its gate reason and the command to approve it.
    assert f"drwatch approve {DB_INC}" in text
    assert "approval required: database.recover for db-2" in text
    # The grid: region, zone (marked down), role and per-layer health.
    assert 'class="zone down" data-zone="us-east-1b"' in dom
    assert 'title="app: down"' in dom
    assert "eu-west-1" in text
    assert "quad9: up" in text
    assert "recovered" in text
    # Readiness: which region serves, the fallback, and the standby's readiness gap.
    assert "Serving: us-east-1 · standby: eu-west-1 · regional fallback: yes" in text
    assert 'data-finding="lb_standby_missing"' in dom
    assert READINESS_EVIDENCE in text


@pytest.mark.parametrize(("readiness_gap", "badge"), [(True, "warning"), (False, "ok")])
async def test_the_badge_warns_while_warning_findings_stand(
    tmp_path: Path, readiness_gap: bool, badge: str
) -> None:
    """No open incident: with a readiness warning (lb-eu-1 down) the badge and the header
    say warning, not OK, and the badge's title counts the warnings; without one, OK."""
    app = build_app(tmp_path / "state", open_incidents=False, readiness_gap=readiness_gap)
    dom = await rendered(app, tmp_path)
    assert f'id="top" class="state-{badge}"' in dom or f'class="state-{badge}" id="top"' in dom
    assert re.search(rf'id="overall" class="badge {badge}"', dom), dom[:2000]
    if readiness_gap:
        assert "1 warning finding(s)" in dom
        assert 'data-finding="lb_standby_missing"' in dom


async def test_page_screenshot_on_a_phone(page_url: str, tmp_path: Path) -> None:
    """A phone-sized screenshot is produced by the test run (test-artifacts/status-page.png)."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    await chromium(tmp_path, f"--screenshot={shot}", "--window-size=412,900", page_url)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    full = ARTIFACTS / "status-page-full.png"
    await chromium(tmp_path, f"--screenshot={full}", "--window-size=412,2600", page_url)
    assert full.stat().st_size > 0


async def test_page_serves_no_third_party_assets(page_url: str) -> None:
    """Every asset is same-origin (no CDN) and the CSP forbids anything else."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(page_url) as resp:
        html = await resp.text()
        csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert not re.search(r"""(src|href)=["']https?://""", html)


class BackupsSeen:
    """The backup service's view as the status document gets it: orders breached at
    the off-site location, fine at the primary; scratch not backed up. With
    `restore_test`, the watcher holds the key and the scheduled test last passed."""

    def __init__(self, restore_test: dict[str, object] | None = None) -> None:
        self.restore_test = restore_test

    def doc(self, now: float) -> dict[str, object]:
        return {}

    def status_part(self, now: float) -> dict[str, object]:
        rows = [
            {"data_class": "orders", "location": "primary", "rpo_s": 180.0, "age_s": 20.0,
             "breached": False, "failing": False},
            {"data_class": "orders", "location": "offsite", "rpo_s": 180.0, "age_s": 400.0,
             "breached": True, "failing": False},
        ]  # fmt: skip
        return {
            "backups": {
                "classes": rows,
                "not_backed_up": ["scratch"],
                "watcher_holds_private_key": self.restore_test is not None,
                "restore_test": self.restore_test,
            },
            "findings": [],
        }


async def _page_with(tmp_path: Path, view: BackupsSeen) -> str:
    app = build_app(tmp_path / "state")
    backups_web.add_routes(app, view)
    return await rendered(app, tmp_path)


async def rendered(app: web.Application, tmp_path: Path) -> str:
    """The page as Chromium renders it, with `app` serving on loopback meanwhile."""
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        return await chromium(tmp_path, "--dump-dom", f"http://127.0.0.1:{port}/")
    finally:
        await runner.cleanup()


async def test_page_shows_the_backups_panel(tmp_path: Path) -> None:
    """With backups configured, the page's Backups panel lists each class at each
    location with the newest verified backup's age against the RPO, marks a breach,
    names the classes not backed up and says the watcher holds no key."""
    dom = await _page_with(tmp_path, BackupsSeen())
    text = dom_text(dom)
    assert 'id="backups" class="card"' in dom
    assert '<tr class="down" data-class="orders" data-location="offsite">' in dom
    assert '<tr class="up" data-class="orders" data-location="primary">' in dom
    assert "RPO breached" in text
    assert "Not backed up, on purpose: scratch." in text
    assert "does not hold the backup key" in text


@pytest.mark.parametrize("overdue", [False, True])
async def test_page_shows_when_data_was_last_proven_restorable(
    tmp_path: Path, overdue: bool
) -> None:
    """The restore test's last pass (backup, rows, time, data age), marked when overdue."""
    last = {"at": 1_790_000_000.0, "backup_id": "orders-20260921T1453-ab12", "rows": 5000,
            "restore_s": 3.2, "data_age_s": 75.0, "passed": True}  # fmt: skip
    test = {"enabled": True, "last_passed": last, "overdue": overdue}
    dom = await _page_with(tmp_path, BackupsSeen(restore_test=test))
    text = dom_text(dom)
    assert (
        "Last proven restorable 2026-09-21 14:13Z: orders-20260921T1453-ab12, 5000 rows in "
        "3 s, data 75 s old" in text
    )
    assert ('id="restore-test" class="overdue"' in dom) is overdue
    assert ("· overdue" in text) is overdue


async def test_page_without_the_watchers_key_says_the_restore_test_is_not_scheduled(
    tmp_path: Path,
) -> None:
    test = {"enabled": False, "why_not": "the watcher holds no private key", "overdue": False}
    dom = await _page_with(tmp_path, BackupsSeen(restore_test=test))
    assert "Not scheduled: the watcher holds no private key." in dom_text(dom)


async def test_page_lists_a_running_playbooks_step_that_waits_for_approval(
    tmp_path: Path,
) -> None:
    """The zone incident's playbook waits at restore_from_dump: the approvals panel names
    the step (the dump and the data it loses) and the command that approves it."""
    state = tmp_path / "state"
    app = build_app(state)
    other = IncidentStore(state)
    app.on_cleanup.append(lambda _app: _close_store(other))
    what = "restore_from_dump: restore dump orders-7 of orders onto a new host (data lost: 42 s)"
    steps = StepApprovals(other)
    steps.request(ZONE_INC, what, NOW)
    approvals_web.add_routes(app, steps)
    dom = await rendered(app, tmp_path)
    text = dom_text(dom)
    assert f"drwatch approve {ZONE_INC}" in text
    assert what in text


async def _close_store(store: IncidentStore) -> None:
    store.close()
