"""`drwatch status|incidents|approve|pause|resume` against the real API on loopback.

The API (drwatch.web.api, the real Cycle controls, a real incident store) runs on its
own event loop in a thread, because the CLI under test runs its own loop.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from drwatch.cli import main
from tests.support.operator_world import DB_INC, TOKEN, ZONE_INC, build_app
from tests.support.services import refused_port, start_site


class ThreadedApi:
    """Serves `build_app(state_dir)` on loopback from a thread with its own loop."""

    def __init__(self, state_dir: Path, token: str | None) -> None:
        self.port = 0  # bound when the thread serves
        self._state_dir, self._token = state_dir, token
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),))

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner = web.AppRunner(build_app(self._state_dir, token=self._token))
        await runner.setup()
        self.port = await start_site(runner)
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    @property
    def url(self) -> str:
        assert self.port, "enter the ThreadedApi first"
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            return json.load(resp)

    def __enter__(self) -> ThreadedApi:
        self._thread.start()
        assert self._ready.wait(10), "API did not start"
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ThreadedApi]:
    with ThreadedApi(tmp_path / "state", TOKEN) as server:
        yield server


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "api.token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(autouse=True)
def _no_token_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRWATCH_API_TOKEN_FILE", raising=False)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _last(out: str) -> str:
    # The daemon's own log lines share this process's stdout; the CLI prints last.
    return out.strip().splitlines()[-1]


def test_status_json_is_the_api_json(api: ThreadedApi, capsys: pytest.CaptureFixture[str]) -> None:
    """`drwatch status --json` prints the same document GET /api/v1/status returns."""
    code, out, _ = _cli(capsys, "status", "--json", "--api", api.url)
    assert code == 0
    assert json.loads(out) == api.get("/api/v1/status")


def test_incidents_json_is_the_api_json(
    api: ThreadedApi, capsys: pytest.CaptureFixture[str]
) -> None:
    """`incidents --json` and `incidents ID --json` are the API's documents as-is."""
    code, out, _ = _cli(capsys, "incidents", "--json", "--api", api.url)
    assert code == 0
    assert json.loads(out) == api.get("/api/v1/incidents")
    code, out, _ = _cli(capsys, "incidents", ZONE_INC, "--json", "--api", api.url)
    assert code == 0
    assert json.loads(out) == api.get(f"/api/v1/incidents/{ZONE_INC}")


def test_status_readable(api: ThreadedApi, capsys: pytest.CaptureFixture[str]) -> None:
    """The default output: watcher state, unhealthy zones, canaries, each open incident."""
    code, out, _ = _cli(capsys, "status", "--api", api.url)
    assert code == 0
    assert out.startswith("drwatch drwatch-test: ok")
    assert "zones: us-east-1b down" in out
    assert "canaries: all up" in out
    assert "open incidents: 2" in out
    assert f"{ZONE_INC}  zone us-east-1b  zone_outage  acting  app_server.replace" in out
    assert f"{DB_INC}  instance us-east-1b  instance_unreachable  awaiting_approval" in out


def test_one_incident_readable(api: ThreadedApi, capsys: pytest.CaptureFixture[str]) -> None:
    """`incidents ID` lists the run's steps with times and details, and why it waits."""
    code, out, _ = _cli(capsys, "incidents", ZONE_INC, "--api", api.url)
    assert code == 0
    assert "done     launch_replacement" in out
    assert "i-0abc (app-3) in us-east-1c" in out
    assert "running  register_with_lb" in out
    code, out, _ = _cli(capsys, "incidents", DB_INC, "--api", api.url)
    assert "not acting: approval required: database.recover for db-2" in out


def test_unknown_incident_is_bad_input(
    api: ThreadedApi, capsys: pytest.CaptureFixture[str]
) -> None:
    """An id the daemon does not know exits 2 with the API's message."""
    code, _, err = _cli(capsys, "incidents", "inc-nope", "--api", api.url)
    assert code == 2
    assert "HTTP 404: no incident inc-nope" in err


def test_approve_without_token_says_how_to_pass_one(
    api: ThreadedApi, capsys: pytest.CaptureFixture[str]
) -> None:
    """Approving without a token exits 2, tells the operator about --token-file, changes nothing."""
    code, _, err = _cli(capsys, "approve", DB_INC, "--api", api.url)
    assert code == 2
    assert "needs the API token" in err
    assert "pass --token-file PATH" in err
    assert api.get(f"/api/v1/incidents/{DB_INC}")["approved_at"] is None


def test_wrong_token_is_refused(
    api: ThreadedApi, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A wrong token exits 2 with a hint to compare it with watcher.api_token_file."""
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-right-token-at-all")
    wrong.chmod(0o600)
    code, _, err = _cli(capsys, "pause", "--api", api.url, "--token-file", str(wrong))
    assert code == 2
    assert "refused the API token" in err
    assert api.get("/api/v1/status")["watcher"]["paused"] is False


def test_approve_with_token(
    api: ThreadedApi, capsys: pytest.CaptureFixture[str], token_file: Path
) -> None:
    """Approval records who approved; approving again is refused as not awaiting approval."""
    code, out, _ = _cli(
        capsys, "approve", DB_INC, "--api", api.url, "--token-file", str(token_file)
    )
    assert code == 0
    assert _last(out).startswith(f"approved {DB_INC}")
    doc = api.get(f"/api/v1/incidents/{DB_INC}")
    assert doc["approved_at"] is not None
    assert doc["gate_history"][-1]["reasons"][0].startswith("approved by cli:")
    code, _, err = _cli(
        capsys, "approve", DB_INC, "--api", api.url, "--token-file", str(token_file)
    )
    assert code == 2
    assert "HTTP 409" in err
    assert "not awaiting approval" in err


def test_pause_and_resume(
    api: ThreadedApi, capsys: pytest.CaptureFixture[str], token_file: Path
) -> None:
    """pause and resume flip the daemon's pause and print what it answered."""
    code, out, _ = _cli(capsys, "pause", "--api", api.url, "--token-file", str(token_file))
    assert code == 0
    assert _last(out).startswith("paused")
    assert api.get("/api/v1/status")["watcher"]["paused"] is True
    code, out, _ = _cli(capsys, "resume", "--api", api.url, "--token-file", str(token_file))
    assert code == 0
    assert _last(out).startswith("resumed")
    assert api.get("/api/v1/status")["watcher"]["paused"] is False


def test_token_file_readable_by_others_is_refused(
    api: ThreadedApi, capsys: pytest.CaptureFixture[str], token_file: Path
) -> None:
    """A token file others can read is bad input: the CLI says to chmod 600 it."""
    token_file.chmod(0o644)
    code, _, err = _cli(capsys, "pause", "--api", api.url, "--token-file", str(token_file))
    assert code == 2
    assert "chmod 600" in err


def test_daemon_without_token_explains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], token_file: Path
) -> None:
    """When the daemon has no token configured, the CLI relays how to configure one."""
    with ThreadedApi(tmp_path / "state", None) as bare:
        code, _, err = _cli(capsys, "pause", "--api", bare.url, "--token-file", str(token_file))
    assert code == 2
    assert "HTTP 403" in err
    assert "watcher.api_token_file" in err


def test_daemon_not_running(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening: exit 1 with 'connection refused' and a hint to start the daemon."""
    with refused_port() as port:
        url = f"http://127.0.0.1:{port}"
        code, _, err = _cli(capsys, "status", "--api", url)
    assert code == 1
    assert f"cannot reach drwatch at {url}: connection refused" in err
    assert "is `drwatch run` running" in err
