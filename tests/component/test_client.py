"""`drwatch status|incidents|approve|pause|resume` against a local stand-in of the API.

The stand-in answers like docs/api.md: bearer token on mutating endpoints, 401 without
detail. It runs on its own loop in a thread because the CLI runs its own event loop.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from drwatch.cli import main
from tests.support.services import free_port

TOKEN = "s3cret-token-of-enough-length"

INCIDENT: dict[str, Any] = {
    "id": "inc-20261126T140501-3f9a",
    "scope": "zone",
    "scope_key": "zone:us-east-1b",
    "finding": "zone_outage",
    "severity": "critical",
    "region": "us-east-1",
    "zone": "us-east-1b",
    "target_names": ["app-3", "app-4", "db-2", "lb-2"],
    "opened_at": "2026-11-26T14:05:01Z",
    "state": "open",
    "outcome": "awaiting_approval",
    "playbook": "app_server.replace",
    "gate_reasons": ["approval required for zone scope"],
    "steps": [
        {
            "name": "launch_replacement",
            "status": "done",
            "started_at": "2026-11-26T14:05:10Z",
            "ended_at": "2026-11-26T14:05:14Z",
            "detail": "i-0abc in us-east-1c",
        }
    ],
}
STATUS: dict[str, Any] = {
    "state": "degraded",
    "summary": "blocked: zone us-east-1b, awaiting approval",
    "paused": False,
    "open_incidents": [INCIDENT],
}


class StubApi:
    """A loopback HTTP server with drwatch's API routes, on a loop in its own thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.posts: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),))

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}"

    async def _get(self, request: web.Request) -> web.Response:
        tail = request.match_info["tail"]
        if tail == "status":
            return web.json_response(STATUS)
        if tail == "incidents":
            return web.json_response({"incidents": [INCIDENT]})
        if tail == f"incidents/{INCIDENT['id']}":
            return web.json_response(INCIDENT)
        return web.json_response({"error": "no such incident"}, status=404)

    async def _post(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        self.posts.append(request.match_info["tail"])
        return web.json_response({"ok": True})

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/api/v1/{tail:.*}", self._get)
        app.router.add_post("/api/v1/{tail:.*}", self._post)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> StubApi:
        self._thread.start()
        assert self._ready.wait(10), "stub API did not start"
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def api() -> Iterator[StubApi]:
    with StubApi() as stub:
        yield stub


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "api.token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_json_is_the_api_json(api: StubApi, capsys: pytest.CaptureFixture[str]) -> None:
    """`drwatch status --json` prints exactly what GET /api/v1/status returned."""
    code, out, _ = _cli(capsys, "status", "--json", "--api", api.url)
    assert code == 0
    assert json.loads(out) == STATUS


def test_status_readable(api: StubApi, capsys: pytest.CaptureFixture[str]) -> None:
    """The default output names the state, the summary and each open incident on one line."""
    code, out, _ = _cli(capsys, "status", "--api", api.url)
    assert code == 0
    assert "summary: blocked: zone us-east-1b, awaiting approval" in out
    assert "open incidents: 1" in out
    assert "inc-20261126T140501-3f9a  zone us-east-1b  zone_outage  awaiting_approval" in out


def test_incidents_json_and_one_incident(api: StubApi, capsys: pytest.CaptureFixture[str]) -> None:
    """`incidents --json` is the API's list; `incidents ID` shows gate reasons and steps."""
    code, out, _ = _cli(capsys, "incidents", "--json", "--api", api.url)
    assert code == 0
    assert json.loads(out) == {"incidents": [INCIDENT]}
    code, out, _ = _cli(capsys, "incidents", INCIDENT["id"], "--api", api.url)
    assert code == 0
    assert "not acting: approval required for zone scope" in out
    assert "done     launch_replacement" in out
    assert "2026-11-26 14:05:10Z -> 2026-11-26 14:05:14Z  i-0abc in us-east-1c" in out


def test_unknown_incident_is_bad_input(api: StubApi, capsys: pytest.CaptureFixture[str]) -> None:
    """An id the daemon does not know exits 2 with the API's message."""
    code, _, err = _cli(capsys, "incidents", "inc-nope", "--api", api.url)
    assert code == 2
    assert "HTTP 404: no such incident" in err


def test_approve_without_token_says_how_to_pass_one(
    api: StubApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Approving without a token exits 2 and tells the operator about --token-file."""
    monkeypatch.delenv("DRWATCH_API_TOKEN_FILE", raising=False)
    code, _, err = _cli(capsys, "approve", INCIDENT["id"], "--api", api.url)
    assert code == 2
    assert "pass --token-file PATH" in err
    assert api.posts == []


def test_wrong_token_is_refused(
    api: StubApi, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A wrong token exits 2 with a hint to compare it with watcher.api_token_file."""
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-right-token-at-all")
    wrong.chmod(0o600)
    code, _, err = _cli(capsys, "pause", "--api", api.url, "--token-file", str(wrong))
    assert code == 2
    assert "refused the API token" in err


def test_mutations_with_token(
    api: StubApi, capsys: pytest.CaptureFixture[str], token_file: Path
) -> None:
    """approve, pause and resume reach their endpoints with the bearer token."""
    for argv in (["approve", INCIDENT["id"]], ["pause"], ["resume"]):
        code, out, _ = _cli(capsys, *argv, "--api", api.url, "--token-file", str(token_file))
        assert code == 0, argv
        assert out.strip()
    assert api.posts == [f"incidents/{INCIDENT['id']}/approve", "pause", "resume"]


def test_token_file_readable_by_others_is_refused(
    api: StubApi, capsys: pytest.CaptureFixture[str], token_file: Path
) -> None:
    """A token file others can read is bad input: the CLI says to chmod 600 it."""
    token_file.chmod(0o644)
    code, _, err = _cli(capsys, "pause", "--api", api.url, "--token-file", str(token_file))
    assert code == 2
    assert "chmod 600" in err


def test_daemon_not_running(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening: exit 1 with 'connection refused' and a hint to start the daemon."""
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = _cli(capsys, "status", "--api", url)
    assert code == 1
    assert f"cannot reach drwatch at {url}: connection refused" in err
    assert "is `drwatch run` running" in err
