"""A live drill against a running fleet (the sandbox stands in for it, through the same
provider API and daemon API a real fleet has): refused without approval and while a
finding is open, then run: drwatch replaces the server, the report and the ledger say so."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from drwatch.ledger import DrillLedger
from drwatch.sandbox import control
from drwatch.sandbox.faults import Fault
from drwatch.sandbox.topology import default_topology
from drwatch.sandbox.world import CONFIG_FILE, DAEMON_DIR, Sandbox
from tests.support.services import need_binary

pytestmark = [pytest.mark.services, pytest.mark.drill]

SCENARIO = """\
name = "live: replace app-3"
duration = "50s"
[objectives]
rto = "45s"
[[event]]
at = "2s"
do = "replace-instance"
target = "app-3"
[[expect]]
scope = "instance"
role = "app_server"
targets = ["app-3"]
playbook = "app_server.replace"
outcome = "recovered"
within = "45s"
"""


async def settled(sb: Sandbox, want_findings: bool) -> bool:
    """The daemon is past its warm-up, every instance healthy, and it reports findings
    (want_findings) or none."""
    try:
        async with sb.session().get(f"{sb.api_url}/api/v1/status") as resp:
            if resp.status != 200:
                return False
            doc = await resp.json()
    except aiohttp.ClientError:  # the daemon is not listening yet
        return False
    return (
        doc["watcher"]["state"] == "ok"
        and doc["all_healthy"] is True
        and bool(doc["findings"]) is want_findings
    )


async def wait_findings(sb: Sandbox, want: bool, deadline_s: float = 60.0) -> None:
    async with asyncio.timeout(deadline_s):
        while True:
            if await settled(sb, want):
                return
            await asyncio.sleep(0.5)


def live(
    config: Path, scenario: Path, report: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drwatch.cli", "drill", str(scenario), "--live",
         "--config", str(config), "--report", str(report), *extra],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


@pytest.mark.timeout(400)
async def test_live_drill_is_guarded_then_measures_a_real_replacement(tmp_path: Path) -> None:
    need_binary("moto_server", str(Path(sys.executable).parent))
    scenario = tmp_path / "live.toml"
    scenario.write_text(SCENARIO)
    report = tmp_path / "report.json"
    async with Sandbox(default_topology(), tmp_path / "sb") as sb:
        chaos = control.attach(sb)
        await wait_findings(sb, want=False, deadline_s=90)
        config = sb.state_dir / CONFIG_FILE

        # No approval: refused, nothing touched.
        proc = await asyncio.to_thread(live, config, scenario, report)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "refused, nothing was touched" in proc.stderr
        assert "approve it explicitly with --approve" in proc.stderr
        assert not any(h.silent for h in sb.hosts.values())

        # A finding open (a disk at 97%): refused, naming it.
        await chaos.do(Fault("fill-disk", "app-1", {"percent": 97.0}))
        await wait_findings(sb, want=True)
        proc = await asyncio.to_thread(live, config, scenario, report, "--approve", "--by", "t")
        assert proc.returncode == 1
        assert "finding open: capacity_disk: app-1: disk / 97%" in proc.stderr
        assert not report.exists()
        await chaos.do(Fault("heal", "app-1"))
        await wait_findings(sb, want=False)

        # Approved, healthy: app-3 is stopped through the provider and drwatch replaces it.
        proc = await asyncio.to_thread(live, config, scenario, report, "--approve", "--by", "t")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        body = json.loads(report.read_text())
        assert body["passed"] is True
        assert body["kind"] == "live"
        assert body["events"][0]["result"].startswith("stopped app-3")
        (inc,) = [i for i in body["incidents"] if i["targets"] == ["app-3"]]
        assert inc["outcome"] == "recovered"
        assert 0 < inc["recovery_s"] <= 45
        with DrillLedger(sb.state_dir / DAEMON_DIR) as ledger:
            (rec,) = ledger.recent()
        assert (rec.kind, rec.result, rec.by) == ("live", "passed", "t")
        assert rec.recovery_s == inc["recovery_s"]


@pytest.mark.timeout(400)
async def test_a_scheduled_live_drill_runs_in_the_daemon_and_is_recorded(tmp_path: Path) -> None:
    """`[[plan.live_drills]]` with `every`: the daemon runs the guarded drill by itself on
    APScheduler, with the schedule's standing approval, and records it in its ledger."""
    need_binary("moto_server", str(Path(sys.executable).parent))
    scenario = tmp_path / "live.toml"
    scenario.write_text(SCENARIO)
    async with Sandbox(default_topology(), tmp_path / "sb") as sb:
        config = sb.state_dir / CONFIG_FILE
        with config.open("a") as f:
            f.write(
                f"\n[[plan.live_drills]]\nscenario = {json.dumps(str(scenario))}\n"
                'every = "40s"\napproved_by = "the schedule test"\n'
            )
        await sb.watcher.stop()
        await sb.watcher.start()
        await wait_findings(sb, want=False, deadline_s=90)
        ledger_dir = sb.state_dir / DAEMON_DIR
        async with asyncio.timeout(200):
            while True:
                if (ledger_dir / "drills.sqlite3").exists():
                    with DrillLedger(ledger_dir) as ledger:
                        recent = ledger.recent()
                    # A run that fired while the fleet was still settling is recorded
                    # as refused (with its reasons); wait for one that ran.
                    ran = [r for r in recent if r.ended_at > r.started_at]
                    if ran:
                        break
                await asyncio.sleep(2)
        for refused in (r for r in recent if r not in ran):
            assert refused.violations[0].startswith("refused: "), refused
        first = ran[-1]
        assert (first.kind, first.by) == ("live", "the schedule test")
        assert first.result == "passed", first.violations
        assert first.recovery_s is not None
        assert first.report["events"][0]["result"].startswith("stopped app-3")
