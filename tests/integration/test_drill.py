"""Drills end to end: the runner's mechanics against a stand-in daemon API, and the
shipped healthy baseline against the real daemon."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from aiohttp import web

from drwatch.sandbox.drill import run_drill
from drwatch.sandbox.scenario import parse_scenario
from drwatch.sandbox.topology import default_topology
from drwatch.sandbox.world import Options, free_port
from tests.support.services import need_binary

pytestmark = [pytest.mark.services, pytest.mark.drill]
ROOT = Path(__file__).resolve().parents[2]


class FakeDaemonApi:
    """Stands in for the daemon: opens an incident for app-3 once the sandbox says it is
    stopped (read from the sandbox's own control API), in the documented shape."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.opened_at: float | None = None

    async def _app3_state(self, session: aiohttp.ClientSession) -> str | None:
        try:
            control = json.loads((self.state_dir / "sandbox.json").read_text())["control"]
            async with session.get(f"{control}/v1/state") as resp:
                hosts = (await resp.json())["hosts"]
        except (OSError, ValueError, aiohttp.ClientError):
            return None
        return next((h["state"] for h in hosts if h["name"] == "app-3"), None)

    async def incidents(self, _request: web.Request) -> web.StreamResponse:
        async with aiohttp.ClientSession() as session:
            if self.opened_at is None and await self._app3_state(session) == "stopped":
                self.opened_at = time.time()
        items: list[dict[str, Any]] = []
        if self.opened_at is not None:
            items.append(
                {
                    "id": "inc-1",
                    "scope": "instance",
                    "role": "app_server",
                    "region": "us-east-1",
                    "zone": "us-east-1b",
                    "targets": ["app-3"],
                    "finding": "instance_stopped",
                    "opened_at_ts": self.opened_at,
                    "playbook": None,
                    "outcome": "detected_only",
                    "steps": [],
                }
            )
        return web.json_response({"incidents": items, "count": len(items)})

    async def status(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response({"all_healthy": True, "targets": [{"health": "up"}]})


@pytest.fixture
async def fake_api(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    state_dir = tmp_path / "drill"
    fake = FakeDaemonApi(state_dir)
    app = web.Application()
    app.router.add_get("/api/v1/incidents", fake.incidents)
    app.router.add_get("/api/v1/status", fake.status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port, state_dir
    finally:
        await runner.cleanup()


async def test_drill_replays_the_timeline_and_judges_the_incidents(
    fake_api: tuple[int, Path],
) -> None:
    """The runner applies each event at its time, reads incidents from the API, measures
    detection from the fault, judges the expectation, and stops the whole sandbox."""
    need_binary("moto_server", str(Path(sys.executable).parent))
    port, state_dir = fake_api
    scenario = parse_scenario(
        {
            "name": "mechanics",
            "duration": "4s",
            "event": [{"at": "1s", "do": "stop-instance", "target": "app-3"}],
            "expect": [
                {"scope": "instance", "targets": ["app-3"], "outcome": "detected_only",
                 "within": "3s"},
            ],
        },
        default_topology(),
    )  # fmt: skip
    options = Options(boot_delay_s=1.0, with_watcher=False, api_port=port)
    # Other tests' session fixtures (a shared moto) may already be our children.
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    report = await run_drill(scenario, default_topology(), state_dir, options)
    assert report["passed"] is True, report
    (event,) = report["events"]
    assert event["do"] == "stop-instance"
    assert event["at_s"] >= report["healthy_at_s"] + 1.0
    (inc,) = report["incidents"]
    assert inc["detection_s"] is not None
    assert inc["detection_s"] >= 0
    assert inc["cause"]["target"] == "app-3"
    assert report["expectations"][0]["met"] is True
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert left == []  # the drill's moto and all are gone


LADDER = (
    "relaunch_same_zone",
    "restore_volume_elsewhere",
    "promote_replica",
    "restore_latest_snapshot",
    "restore_older_snapshot",
    "restore_from_dump",
)
# The database drills must each end on their own rung of the ladder, every rung above
# it skipped with its reason (issue #5's acceptance).
RUNG = {
    "db-relaunch.toml": "relaunch_same_zone",
    "fail-launches.toml": "restore_volume_elsewhere",
    "corrupt-volume.toml": "promote_replica",
    "db-restore-latest-snapshot.toml": "restore_latest_snapshot",
    "corrupt-snapshot.toml": "restore_older_snapshot",
}
# The same drills with real PostgreSQL (postgres = true) end on the same rungs.
RUNG.update({name.replace(".toml", "-pg.toml"): rung for name, rung in list(RUNG.items())})
RUNG["replica-lag-pg.toml"] = "promote_replica"
RUNG["db-restore-from-dump-pg.toml"] = "restore_from_dump"
SHIPPED = sorted(p.name for p in (ROOT / "config/drills").glob("*.toml"))


def run_shipped(tmp_path: Path, name: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    need_binary("moto_server", str(Path(sys.executable).parent))
    report_path = tmp_path / "r.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "drwatch.cli", "drill", str(ROOT / "config/drills" / name),
            "--sandbox", "--report", str(report_path), "--state-dir", str(tmp_path / "state"),
        ],
        capture_output=True, text=True, timeout=380, check=False,
    )  # fmt: skip
    return proc, json.loads(report_path.read_text())


def assert_rung(report: Any, rung: str) -> None:
    (inc,) = [i for i in report["incidents"] if i["playbook"] == "database.recover"]
    status = {s["name"]: s for s in inc["steps"]}
    assert status[rung]["status"] == "done", inc["steps"]
    for above in LADDER[: LADDER.index(rung)]:
        assert status[above]["status"] == "skipped", inc["steps"]
        assert status[above]["detail"], f"{above} skipped without a reason"
    assert status["fence_old_primary"]["status"] == "done"
    assert status["repoint_app_servers"]["status"] == "done"


@pytest.mark.timeout(400)
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_drill_passes(tmp_path: Path, name: str) -> None:
    """Each shipped scenario passes against the real daemon in a fresh sandbox: exit 0,
    every expectation met (the healthy baseline: zero incidents); the database drills end
    on their own rung of the ladder."""
    proc, report = run_shipped(tmp_path, name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["passed"] is True
    if name == "healthy.toml":
        assert report["incidents"] == []
    if name in RUNG:
        assert_rung(report, RUNG[name])
    if name == "disk-trend.toml":
        assert_warned_well_before_full(report)
    if name == "restore-test-pg.toml":  # the restore said what it restored
        (restore,) = report["events"]
        assert " rows in " in restore["result"], restore
    if name.startswith("region-failover"):
        assert_region_failover(report, refused=name == "region-failover-refused.toml")
    if name == "standby-lb-down.toml":
        assert_replaced_without_an_eip(report)
    if name == "kill-leader.toml":
        assert_taken_over_once(report)
    if name == "etcd-outage.toml":
        assert_no_action_without_etcd(report)
    if name == "cut-etcd.toml":
        assert_another_leads_after_the_cut(report)
    if name == "cut-vantage.toml":
        # The cut watcher led: without the quorum it would have opened a zone outage.
        (cut,) = [e for e in report["events"] if e["do"] == "cut-vantage"]
        assert "/us-east-1b)" in cut["result"], cut
        assert [i for i in report["incidents"] if i["scope"] in ("zone", "instance")] == []

    if name == "db-restore-from-dump-pg.toml":
        assert_data_loss_is_the_dumps_age(report)
    if name.endswith("-pg.toml"):  # real PostgreSQL: the writer's rows were measured
        assert report["data"]["rows_written"] > 0
        assert report["data"]["rows_lost"] is not None


def assert_data_loss_is_the_dumps_age(report: Any) -> None:
    """The approval came from the drill; the rows that survive in the new primary's real
    PostgreSQL are the dump's: some rows were lost, and the measured loss window (the
    fault to the newest surviving row) is the dump's age at the fault, which the rung
    reported as its age when it chose the dump, less the time from the fault to then."""
    (inc,) = [i for i in report["incidents"] if i["playbook"] == "database.recover"]
    (approve,) = [e for e in report["events"] if e["do"] == "approve"]
    assert not approve["error"], approve
    rung = next(s for s in inc["steps"] if s["name"] == "restore_from_dump")
    assert "approved by drill" in rung["detail"], rung
    age = float(rung["detail"].rpartition("the dump's age, ")[2].split(" s")[0])
    data = report["data"]
    assert data["rows_lost"] > 0, data
    assert data["newest_surviving_at_s"] is not None, data  # the dump's rows are there
    since_fault = rung["started_at_s"] - data["fault_at_s"]
    assert since_fault > 0, (rung, data)
    # The dump's age at the fault. The rung chose it at the step's start (its age rounded
    # to the second); the dump's data is a little newer than its time (pg_dump starts
    # after it) and a little older when the replica lagged: a few seconds either way.
    at_fault = age - since_fault
    assert at_fault - 5.0 <= data["loss_window_s"] <= at_fault + 3.0, (age, since_fault, data)


REGION_STEPS = [
    "preconditions",
    "fence_lost_region",
    "promote_replica",
    "scale_app_servers",
    "ensure_load_balancer",
    "switch_dns",
    "verify_service",
]


def assert_region_failover(report: Any, *, refused: bool) -> None:
    """One region.failover run: refused at its preconditions with the reason and nothing
    after; or every step once (a resumed run too), the service answering from eu-west-1."""
    (inc,) = [i for i in report["incidents"] if i["playbook"] == "region.failover"]
    names = [s["name"] for s in inc["steps"]]
    if refused:
        assert names == ["preconditions"], inc["steps"]
        assert "replica db-3 in eu-west-1 is not reachable" in inc["steps"][0]["detail"]
        return
    assert names == REGION_STEPS, inc["steps"]
    assert report["service"]["region"] == "eu-west-1"
    assert str(report["service"]["via"]).startswith("lb-eu")


def assert_replaced_without_an_eip(report: Any) -> None:
    """lb-eu has no Elastic IP: load_balancer.replace skipped the move saying so, and
    launched the replacement."""
    (inc,) = [i for i in report["incidents"] if i["playbook"] == "load_balancer.replace"]
    status = {s["name"]: s for s in inc["steps"]}
    assert status["launch_replacement"]["status"] == "done", inc["steps"]
    assert status["move_eip"]["status"] == "skipped", inc["steps"]
    assert "lb-eu has no Elastic IP" in status["move_eip"]["detail"]


def assert_warned_well_before_full(report: Any) -> None:
    """app-3's disk grows 20%/min from 35%: full 195 s after the fault, past the fixed
    90% threshold at 165 s. The trend warning comes minutes before either, and its
    estimate is within a third of the truth."""
    (grow,) = [e for e in report["events"] if e["do"] == "grow-disk"]
    full_at = grow["at_s"] + (100 - 35) / 20 * 60
    (seen,) = [
        f
        for f in report["findings"]
        if f["finding"] == "disk_full_soon" and f["targets"] == ["app-3"]
    ]
    assert full_at - seen["first_seen_s"] > 120, seen
    truth = full_at - seen["first_seen_s"]
    assert abs(float(seen["facts"]["eta_s"]) - truth) < truth / 3, seen


def _replacement(report: Any) -> Any:
    (inc,) = [i for i in report["incidents"] if i["playbook"] == "app_server.replace"]
    return inc


def assert_taken_over_once(report: Any) -> None:
    """The leader was killed mid-run: another watcher led afterwards, and the run it
    resumed launched one replacement (the launch step ran once, before the kill)."""
    (kill,) = [e for e in report["events"] if e["do"] == "kill-leader"]
    assert not kill["error"], kill
    names = [t["name"] for t in report["leaders"]]
    assert len(set(names)) >= 2, report["leaders"]
    steps = _replacement(report)["steps"]
    (launch,) = [s for s in steps if s["name"] == "launch_replacement"]
    assert launch["started_at_s"] < kill["at_s"], (launch, kill)
    assert [s["status"] for s in steps] == ["done"] * len(steps), steps
    # The step report names who ran each: the killed leader launched, another finished.
    assert launch["watcher"] != steps[-1]["watcher"], steps
    assert {s["watcher"] for s in steps} <= {t["name"] for t in report["leaders"]}, steps


def assert_no_action_without_etcd(report: Any) -> None:
    """While etcd was out nobody acted: the replacement started only after it came back."""
    (heal,) = [e for e in report["events"] if e["do"] == "heal"]
    first = min(s["started_at_s"] for s in _replacement(report)["steps"])
    assert first >= heal["at_s"], (first, heal)


def assert_another_leads_after_the_cut(report: Any) -> None:
    """The leader cut from etcd lost its term; another watcher led while it was cut (and
    replaced app-3: the expectation)."""
    (cut,) = [e for e in report["events"] if e["do"] == "cut-etcd"]
    cut_watcher = cut["result"].rpartition("(")[2].rstrip(")")
    (heal,) = [e for e in report["events"] if e["do"] == "heal"]
    terms = report["leaders"]
    assert any(t["name"] == cut_watcher and t["to_s"] is not None for t in terms), terms
    assert any(
        t["name"] != cut_watcher and cut["at_s"] < t["from_s"] < heal["at_s"] for t in terms
    ), terms
