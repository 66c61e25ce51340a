"""`drwatch plan`: what the document says, with and without live state, and --check."""

from __future__ import annotations

import json
import re
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from drwatch import config as config_mod
from drwatch.cli import main
from drwatch.ledger import record_report
from drwatch.plan.build import Drills, Live, build_plan
from drwatch.plan.render import markdown, page
from tests.support.services import free_port

EXAMPLE = Path(__file__).parents[2] / "config" / "drwatch.example.toml"
NOW = 1_790_000_000.0
DAY = 86400.0


def example(tmp_path: Path, **changes: Any) -> Path:
    """The example config with its state in tmp_path, only sandbox drills required, and
    `changes` replacing top-level tables."""
    data = tomllib.loads(EXAMPLE.read_text())
    data["watcher"]["state_dir"] = str(tmp_path / "state")
    data["objectives"]["drill_kinds"] = ["sandbox"]
    data.update(changes)
    path = tmp_path / "drwatch.toml"
    path.write_text("".join(f"{key} = {_inline(value)}\n" for key, value in data.items()))
    return path


def _inline(value: Any) -> str:
    """A value as TOML inline syntax (tables inline, strings JSON-quoted)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def load(path: Path) -> config_mod.Config:
    return config_mod.load(path)


STATUS = {
    "summary": "no action: 3/3 healthy",
    "targets": [
        {"name": "app-1", "group": "app", "zone": "us-east-1a", "region": "us-east-1"},
        {"name": "app-3", "group": "app", "zone": "us-east-1b", "region": "us-east-1"},
        {"name": "db-1", "group": "db", "zone": "us-east-1a", "region": "us-east-1"},
    ],
    "findings": [],
    "open_incidents": [],
}


def test_config_only_plan_says_what_is_missing_instead_of_failing(tmp_path: Path) -> None:
    """No daemon, no backups: every section is there; the gaps are named with the reason."""
    plan = build_plan(load(example(tmp_path)), Live(), Drills(), NOW)
    text = markdown(plan)
    for title in ("Objectives", "Owners and escalation", "Services and where they run",
                  "Data classes and backups", "Key custody", "What happens, scenario by scenario",
                  "Readiness now", "Drills"):  # fmt: skip
        assert f"## {title}" in text
    missing = " ".join(t for _, t in plan.notes("missing"))
    assert "no --api URL was given" in missing
    assert "No [backup] section is configured" in missing
    # Generated from the config and the playbook registry, not kept by hand.
    assert "| orders | 5m | 5m |" in text
    assert "launch_replacement → wait_healthy → register_backend" in text
    assert "waits for `drwatch approve ID` from Sam Okafor" in text
    assert "| On-call SRE | first responder |" in text
    # Columns nobody filled in are left out: no one on the escalation list has an email.
    assert "| name | role | phone | when |\n|---|---|---|---|\n| On-call SRE |" in text


def test_no_drill_recorded_is_unmet_and_a_recent_pass_meets_it(tmp_path: Path) -> None:
    cfg = load(example(tmp_path))
    plan = build_plan(cfg, Live(), Drills(), NOW)
    assert plan.unmet == [("Drills", "sandbox: no passing drill recorded: overdue")]
    recent = Drills(latest={("sandbox", "passed"): NOW - 10 * DAY})
    assert build_plan(cfg, Live(), recent, NOW).unmet == []
    stale = Drills(latest={("sandbox", "passed"): NOW - 183 * DAY})
    assert "overdue since" in build_plan(cfg, Live(), stale, NOW).unmet[0][1]


def test_live_state_fills_places_and_readiness(tmp_path: Path) -> None:
    """With the daemon's status: where each group runs, and every finding is unmet."""
    cfg = load(example(tmp_path))
    status = {**STATUS, "findings": [
        {"severity": "warning", "finding": "disk_full_soon",
         "evidence": "app-3: disk / 91% used: full in about 3 h"},
    ]}  # fmt: skip
    plan = build_plan(cfg, Live(status=status, api="http://x"), Drills(), NOW)
    text = markdown(plan)
    assert "| app | app_server | 6 | app-1, app-3 | us-east-1a, us-east-1b | us-east-1 |" in text
    assert (
        "Readiness now",
        "disk_full_soon: app-3: disk / 91% used: full in about 3 h",
    ) in plan.unmet


def test_a_daemon_that_does_not_answer_is_unmet_readiness(tmp_path: Path) -> None:
    plan = build_plan(load(example(tmp_path)), Live(api="http://x", error="refused"), Drills(), NOW)
    assert ("Readiness now", "Readiness is unknown: refused.") in plan.unmet


def test_missing_contacts_are_unmet(tmp_path: Path) -> None:
    plan = build_plan(load(example(tmp_path, plan={})), Live(), Drills(), NOW)
    unmet = " ".join(t for _, t in plan.unmet)
    assert "No owners are named" in unmet
    assert "No escalation contacts" in unmet


def test_html_is_one_self_contained_page(tmp_path: Path) -> None:
    """No script, no external stylesheet, image or font; text is escaped."""
    cfg = load(example(tmp_path, plan={"title": "Shop <DR> plan"}))
    html = page(build_plan(cfg, Live(), Drills(), NOW))
    assert "<title>Shop &lt;DR&gt; plan</title>" in html
    assert "<script" not in html
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html)
    assert "@media print" in html
    assert 'class="verdict unmet"' in html


def test_check_fails_without_a_drill_and_passes_after_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI: exit 1 with the unmet part named; record a passing drill; exit 0."""
    path = example(tmp_path)
    assert main(["plan", "--config", str(path), "--check"]) == 1
    assert "not met: Drills: sandbox: no passing drill recorded" in capsys.readouterr().err
    report = {"scenario": "stop app-3", "passed": True, "started_at": time.time()}
    record_report(tmp_path / "state", report, "sandbox")
    assert main(["plan", "--config", str(path), "--check"]) == 0
    assert main(["drills", "--config", str(path)]) == 0
    assert "sandbox      passed  stop app-3" in capsys.readouterr().out


def test_check_with_an_unreachable_daemon_fails_and_still_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = example(tmp_path)
    record_report(
        tmp_path / "state", {"scenario": "s", "passed": True, "started_at": time.time()}, "sandbox"
    )
    out = tmp_path / "plan.html"
    api = f"http://127.0.0.1:{free_port()}"
    code = main(
        ["plan", "--config", str(path), "--api", api, "--format", "html", "-o", str(out), "--check"]
    )
    assert code == 1
    assert "did not answer" in capsys.readouterr().err
    assert "Readiness is unknown" in out.read_text()


def test_drills_record_refuses_what_is_not_a_report(tmp_path: Path) -> None:
    path = example(tmp_path)
    bogus = tmp_path / "r.json"
    bogus.write_text('{"hello": 1}')
    args = ["drills", "record", str(bogus), "--kind", "restore_test", "--config", str(path)]
    assert main(args) == 2


def test_live_plan_says_which_region_serves_and_that_there_is_no_fallback(
    tmp_path: Path,
) -> None:
    """With live readiness, the plan names the serving region as drwatch sees it, and a
    lost standby region is an unmet note: the service has no regional fallback now."""
    cfg = load(example(tmp_path))
    readiness: dict[str, Any] = {
        "serving_region": "us-east-1",
        "standby_region": "eu-west-1",
        "regional_fallback": False,
        "fallback": "none: the standby region eu-west-1 is lost (dr_capacity_lost)",
        "regions": {"detail": "us-east-1 serves (DNS PRIMARY: unknown; db-1 in us-east-1)"},
    }
    lost: dict[str, Any] = {**STATUS, "readiness": readiness}
    text = markdown(build_plan(cfg, Live(status=lost, api="http://x"), Drills(), NOW))
    assert "Serving region: us-east-1 (us-east-1 serves (DNS PRIMARY: unknown; db-1" in text
    plan = build_plan(cfg, Live(status=lost, api="http://x"), Drills(), NOW)
    unmet = [t for _, t in plan.notes("unmet")]
    assert (
        "The service has no regional fallback now: none: the standby region eu-west-1 is "
        "lost (dr_capacity_lost)." in unmet
    )
    fine: dict[str, Any] = {**STATUS, "readiness": {**readiness, "regional_fallback": True}}
    plan = build_plan(cfg, Live(status=fine, api="http://x"), Drills(), NOW)
    assert not any("regional fallback" in t for _, t in plan.notes("unmet"))
