"""The DR plan and the drills panel as a person sees them: headless Chromium; and
`drwatch plan --check` against a running sandbox, before and after a real drill."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from drwatch.assess.trends import DiskTrend, TrendReport
from drwatch.ledger import DrillLedger, record_report
from drwatch.model.findings import Diagnosis, Finding
from drwatch.sandbox.daemon_api import DaemonApi
from drwatch.sandbox.topology import default_topology
from drwatch.sandbox.world import CONFIG_FILE, DAEMON_DIR, Sandbox
from drwatch.web import outlook
from tests.support.operator_services import chromium, dom_text
from tests.support.operator_world import NOW, build_app
from tests.support.services import free_port, need_binary

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
EXAMPLE = ROOT / "config" / "drwatch.example.toml"
DAY = 86400.0


@pytest.fixture
async def page_url(tmp_path: Path) -> AsyncIterator[str]:
    """The status page over the operator world, with a drill ledger holding one passing
    sandbox drill (10 days ago) and a disk that fills app-3 in about 3 hours."""
    app = build_app(tmp_path / "state")
    ledger = DrillLedger(tmp_path / "state")
    report = {
        "scenario": "app server crash",
        "passed": True,
        "started_at": NOW - 10 * DAY,
        "objectives": {"rto_s": 120.0},
        "incidents": [{"detection_s": 1.4, "recovery_s": 8.4}],
    }
    record_report(tmp_path / "state", report, "sandbox")
    warn = Diagnosis(
        Finding.DISK_FULL_SOON,
        "instance:i-0004",
        targets=("i-0004",),
        evidence="app-3: disk / 91% used, growing 3.00 GiB/h: full in about 3 h 0 min",
    )
    trend = DiskTrend("i-0004", "app-3", "/", 91.0, 1e6, 10800.0, 60, 1800.0)
    state = outlook.OutlookState(
        ledger, 182 * DAY, ("sandbox", "live"), TrendReport((warn,), (trend,), ()), lambda: NOW
    )
    outlook.add_routes(app, state)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()
    ledger.close()


async def test_status_page_shows_the_last_drill_when_the_next_is_due_and_early_warnings(
    page_url: str, tmp_path: Path
) -> None:
    dom = await chromium(tmp_path, "--dump-dom", page_url)
    text = dom_text(dom)
    assert "sandbox · app server crash · passed · recovery 8 s (RTO 2 min)" in text
    assert "sandbox: last passed 10 days ago; next due by" in text
    assert 'class="overdue" data-kind="live"' in dom
    assert "live: no passing drill recorded: overdue" in text
    assert 'data-finding="disk_full_soon"' in dom
    assert "app-3: disk / 91% used, growing 3.00 GiB/h: full in about 3 h 0 min" in text


def plan_html(tmp_path: Path) -> Path:
    """`drwatch plan --format html` on the example config with one passing drill."""
    state = tmp_path / "state"
    config = tmp_path / "drwatch.toml"
    config.write_text(
        EXAMPLE.read_text().replace('state_dir = "/var/lib/drwatch"', f'state_dir = "{state}"')
    )
    report = {"scenario": "zone outage", "passed": True, "started_at": time.time() - 3 * DAY}
    record_report(state, {**report, "objectives": {"rto_s": 120.0}}, "sandbox")
    out = tmp_path / "plan.html"
    proc = subprocess.run(
        [sys.executable, "-m", "drwatch.cli", "plan", "--config", str(config),
         "--format", "html", "-o", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


async def test_the_plan_page_reads_as_a_document_in_chromium(tmp_path: Path) -> None:
    """Opened from a file, as it would be from a mail: every section, the unmet part at
    the top, the scenarios with their steps; a screenshot for people to look at."""
    page = plan_html(tmp_path)
    dom = await chromium(tmp_path, "--dump-dom", page.as_uri())
    text = dom_text(dom)
    assert "Shop: disaster-recovery plan" in text
    assert "1 part(s) not met" in text
    assert "Drills: live: no passing drill recorded: overdue" in text
    for section in ("summary", "objectives", "contacts", "services", "data", "keys",
                    "scenarios", "readiness", "drills"):  # fmt: skip
        assert f'<section id="{section}">' in dom
    assert "The whole provider is lost" in text
    assert "check_standby → move_eip → verify_service" in text
    assert "zone outage" in text
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "plan.png"
    shot.unlink(missing_ok=True)
    await chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,3000", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_plan_prints_to_pdf(tmp_path: Path) -> None:
    need_binary("chromium")
    state = tmp_path / "state"
    config = tmp_path / "drwatch.toml"
    config.write_text(
        EXAMPLE.read_text().replace('state_dir = "/var/lib/drwatch"', f'state_dir = "{state}"')
    )
    out = tmp_path / "plan.pdf"
    proc = subprocess.run(
        [sys.executable, "-m", "drwatch.cli", "plan", "--config", str(config),
         "--format", "pdf", "-o", str(out)],
        capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    assert data.startswith(b"%PDF-")
    # More than one page: a document, not a blank sheet.
    assert data.count(b"/Type /Page") + data.count(b"/Type/Page") > 2


def _plan_check(config: Path, api: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drwatch.cli", "plan", "--config", str(config), "--api", api,
         "--check", "--format", "markdown", "-o", str(config.parent / "plan.md")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.timeout(300)
async def test_plan_check_on_a_sandbox_fails_without_a_drill_and_passes_after_one(
    tmp_path: Path,
) -> None:
    """A running sandbox: `drwatch plan --check` fails naming the missing drill; a real
    sandbox drill recorded with `--config` into the sandbox's ledger makes it pass, and
    the daemon reports that drill."""
    need_binary("moto_server", str(Path(sys.executable).parent))
    scenario = tmp_path / "quick.toml"
    scenario.write_text('name = "quick baseline"\nduration = "20s"\nmax_incidents = 0\n')
    async with Sandbox(default_topology(), tmp_path / "sb") as sb:
        api = DaemonApi(sb.api_url, sb.session())
        async with asyncio.timeout(90):  # the daemon itself says all healthy
            while True:
                if await api.healthy() is True:
                    break
                await asyncio.sleep(0.5)
        config = sb.state_dir / CONFIG_FILE
        first = await asyncio.to_thread(_plan_check, config, sb.api_url)
        assert first.returncode == 1, first.stderr
        assert "not met: Drills: sandbox: no passing drill recorded" in first.stderr
        text = (config.parent / "plan.md").read_text()
        assert "| app | app_server | 6 | app-1, app-2, app-3, app-4, app-5, app-6 |" in text, text
        drill = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "drwatch.cli", "drill", str(scenario), "--sandbox",
             "--report", str(tmp_path / "r.json"), "--config", str(config)],
            capture_output=True, text=True, timeout=200, check=False,
        )  # fmt: skip
        assert drill.returncode == 0, drill.stdout + drill.stderr
        assert "recorded in the drill ledger as drill-" in drill.stdout
        assert (sb.state_dir / DAEMON_DIR / "drills.sqlite3").exists()
        deadline = time.monotonic() + 60
        while True:  # readiness: the sandbox's boot-time suspects must have cleared
            second = await asyncio.to_thread(_plan_check, config, sb.api_url)
            if second.returncode == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(2)
        assert second.returncode == 0, second.stderr
        assert "every part is met" in second.stderr
        assert "quick baseline" in (config.parent / "plan.md").read_text()
        listed = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "drwatch.cli", "drills", "--api", sb.api_url],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        assert "sandbox      passed  quick baseline" in listed.stdout
