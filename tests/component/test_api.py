"""The JSON API over a real aiohttp test server: documents, auth and controls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from drwatch.config import PolicyConfig, TimingConfig
from drwatch.cycle import Cycle, NullRunner
from drwatch.incidents import IncidentStore
from drwatch.model import Fleet, Health, Layer, Snapshot
from drwatch.model.snapshot import Discovery
from drwatch.web.api import LiveApiState, add_routes
from tests.scenarios.world import NOW, World

TOKEN = b"s3cret-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN.decode()}"}


def _region_down() -> World:
    world = World.healthy().provider_blind("eu-west-1")
    for n in ("db-3", "app-eu-1", "lb-eu-1"):
        world.dark(n, health=Health.UNKNOWN)
    return world


def make_state(tmp_path: Path, token: bytes | None, **kw: object) -> LiveApiState:
    store = IncidentStore(tmp_path)
    cycle = Cycle(PolicyConfig(), TimingConfig(), store, NullRunner(), NOW - 3600)
    return LiveApiState(
        watcher_name="drwatch-test",
        dry_run=False,
        api_token=token,
        incidents=store,
        controls=cycle,
        clock=lambda: NOW,
        **kw,  # type: ignore[arg-type]
    )


def tick(state: LiveApiState, world: World, at: float = NOW) -> None:
    assert isinstance(state.controls, Cycle)
    snap = world.snapshot()
    state.update(state.controls.tick(snap, at), snap)


@pytest.fixture
async def client(
    tmp_path: Path,
) -> AsyncIterator[tuple[TestClient[web.Request, web.Application], LiveApiState]]:
    state = make_state(tmp_path, TOKEN)
    app = web.Application()
    add_routes(app, state)
    async with TestClient(TestServer(app)) as c:
        yield c, state


async def test_status_reports_watcher_targets_layers_and_summary(
    client: tuple[TestClient[web.Request, web.Application], LiveApiState],
) -> None:
    """Status names the watcher, the last tick's summary and time, every target with
    its layers, zones, regions, canaries and the healthy counts."""
    c, state = client
    tick(state, World.healthy())
    resp = await c.get("/api/v1/status")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["watcher"] == {
        "name": "drwatch-test",
        "state": "ok",
        "reason": "",
        "dry_run": False,
        "paused": False,
    }
    assert doc["summary"] == "no action: 13/13 healthy"
    assert doc["tick_at_ts"] == NOW
    assert doc["tick_at"].endswith("Z")
    assert doc["counts"] == {"healthy": 13, "total": 13}
    assert doc["all_healthy"] is True
    app3 = next(t for t in doc["targets"] if t["name"] == "app-3")
    assert (app3["role"], app3["group"], app3["zone"]) == ("app_server", "app", "us-east-1b")
    assert set(app3["layers"]) == {"provider", "agent", "app"}
    assert app3["layers"]["agent"]["health"] == "up"
    assert "since_ts" in app3["layers"]["agent"]
    assert {z["name"] for z in doc["zones"]} >= {"us-east-1a", "eu-west-1a"}
    assert {r["name"] for r in doc["regions"]} == {"us-east-1", "eu-west-1"}
    assert len(doc["canaries"]) == 2


async def test_incidents_list_and_one_with_required_fields(
    client: tuple[TestClient[web.Request, web.Application], LiveApiState],
) -> None:
    """Incidents list newest first (and only open ones with ?open=1); one incident
    carries every contract field."""
    c, state = client
    tick(state, World.healthy().stop("app-3"))
    tick(state, World.healthy(), NOW + 1)
    tick(state, World.healthy().stop("app-5"), NOW + 2)
    listed = await (await c.get("/api/v1/incidents")).json()
    assert [i["targets"] for i in listed["incidents"]] == [["app-5"], ["app-3"]]
    opened = await (await c.get("/api/v1/incidents?open=1")).json()
    assert [i["targets"] for i in opened["incidents"]] == [["app-5"]]
    one = await (await c.get(f"/api/v1/incidents/{listed['incidents'][1]['id']}")).json()
    required = {
        "id",
        "scope",
        "role",
        "region",
        "zone",
        "targets",
        "target_ids",
        "finding",
        "opened_at",
        "playbook",
        "outcome",
        "recovered_at",
        "closed_at",
        "steps",
        "gate_reasons",
    }
    assert required <= set(one)
    assert (one["scope"], one["role"], one["zone"], one["target_ids"]) == (
        "instance",
        "app_server",
        "us-east-1b",
        ["i-app-3"],
    )
    assert (one["outcome"], one["closed_at_ts"]) == ("detected_only", NOW + 1)
    assert (one["phase"], one["finding"], one["opened_finding"]) == (
        "ended",
        "instance_stopped",
        "instance_stopped",
    )
    assert (await c.get("/api/v1/incidents/inc-missing")).status == 404


async def test_mutations_need_the_right_token(
    client: tuple[TestClient[web.Request, web.Application], LiveApiState],
) -> None:
    """Without the token or with a wrong one, pause is refused 401 with no detail."""
    c, state = client
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN.decode()}"},
    ):
        resp = await c.post("/api/v1/pause", headers=headers)
        assert resp.status == 401
        assert await resp.json() == {"error": "unauthorized"}
    assert not state.controls.paused


async def test_pause_and_resume(
    client: tuple[TestClient[web.Request, web.Application], LiveApiState],
) -> None:
    """Pause and resume with the token change the watcher's state."""
    c, state = client
    resp = await c.post("/api/v1/pause", headers=AUTH, json={"by": "alice"})
    assert resp.status == 200
    assert (await resp.json())["paused"] is True
    assert state.controls.paused
    doc = await (await c.get("/api/v1/status")).json()
    assert doc["watcher"]["paused"] is True
    resp = await c.post("/api/v1/resume", headers=AUTH)
    assert (await resp.json())["paused"] is False


async def test_bad_bodies_are_refused(
    client: tuple[TestClient[web.Request, web.Application], LiveApiState],
) -> None:
    """A mutation body must be empty or a small JSON object with only `by`."""
    c, _ = client
    for body in (b"not json", b"[1]", b'{"evil": 1}', b'{"by": ""}', b"x" * 5000):
        resp = await c.post("/api/v1/pause", headers=AUTH, data=body)
        assert resp.status in (400, 413)


async def test_approve_works_and_is_refused_when_not_waiting(
    client: tuple[TestClient[web.Request, web.Application], LiveApiState],
) -> None:
    """A region incident awaits approval; approve records it; approving again is 409."""
    c, state = client
    tick(state, _region_down())
    (inc,) = state.incidents.open_incidents()
    assert inc.outcome is not None
    assert inc.outcome.value == "awaiting_approval"
    resp = await c.post(f"/api/v1/incidents/{inc.id}/approve", headers=AUTH)
    assert resp.status == 200
    doc = await resp.json()
    assert doc["incident"]["approved_at_ts"] == NOW
    assert "approved" in doc["message"]
    again = await c.post(f"/api/v1/incidents/{inc.id}/approve", headers=AUTH)
    assert again.status == 409
    missing = await c.post("/api/v1/incidents/inc-nope/approve", headers=AUTH)
    assert missing.status == 404


async def test_no_token_configured_refuses_mutations_with_403(tmp_path: Path) -> None:
    """With no token configured, mutating endpoints say 403 and how to configure one;
    reads stay open."""
    state = make_state(tmp_path, None)
    app = web.Application()
    add_routes(app, state)
    async with TestClient(TestServer(app)) as c:
        resp = await c.post("/api/v1/pause", headers=AUTH)
        assert resp.status == 403
        assert "watcher.api_token_file" in (await resp.json())["error"]
        assert (await c.get("/api/v1/status")).status == 200


async def test_reads_can_require_the_token(tmp_path: Path) -> None:
    """With api_read_requires_token, reads need the token too."""
    state = make_state(tmp_path, TOKEN, read_requires_token=True)
    app = web.Application()
    add_routes(app, state)
    async with TestClient(TestServer(app)) as c:
        assert (await c.get("/api/v1/status")).status == 401
        assert (await c.get("/api/v1/status", headers=AUTH)).status == 200


async def test_watcher_impaired_shows_in_status(
    client: tuple[TestClient[web.Request, web.Application], LiveApiState],
) -> None:
    """Canaries down: status says impaired with the reason, and no incident exists."""
    c, state = client
    world = World.healthy()
    world.layer("canary-a", Layer.CANARY, Health.DOWN).layer("canary-b", Layer.CANARY, Health.DOWN)
    tick(state, world)
    doc = await (await c.get("/api/v1/status")).json()
    assert doc["watcher"]["state"] == "impaired"
    assert "canary" in doc["watcher"]["reason"]
    assert doc["summary"] == "watcher impaired: canaries failing, not acting"
    assert doc["all_healthy"] is False
    assert doc["open_incidents"] == []


async def test_a_blind_watcher_is_not_ok_and_not_healthy(
    client: tuple[TestClient[web.Request, web.Application], LiveApiState],
) -> None:
    """Discovery refused from the start: no fleet, groups configured. The status says
    impaired with the reason, all_healthy is false, and the finding is listed."""
    c, state = client
    assert isinstance(state.controls, Cycle)
    blind = Snapshot(
        taken_at=NOW,
        fleet=Fleet(),
        discovery=Discovery(MappingProxyType({"us-east-1": "AuthFailure: refused"}), ("app",)),
    )
    state.update(state.controls.tick(blind, NOW), blind)
    doc = await (await c.get("/api/v1/status")).json()
    assert doc["watcher"]["state"] == "impaired"
    assert doc["watcher"]["reason"].startswith("no instance found of group(s) app")
    assert doc["all_healthy"] is False
    assert [f["finding"] for f in doc["findings"]] == ["watcher_blind"]
