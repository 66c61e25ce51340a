"""`drwatch sandbox` as a user runs it: a process that brings everything up, takes faults
from the command line, and on SIGINT/SIGTERM leaves no process and no port behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from drwatch.sandbox.leftovers import reap_leftovers
from drwatch.sandbox.world import STATE_FILE
from tests.support.services import need_binary

pytestmark = pytest.mark.services

UP_DEADLINE_S = 60.0


def _drwatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drwatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _state(state_dir: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((state_dir / "sandbox.json").read_text())
    with urllib.request.urlopen(f"{info['control']}/v1/state", timeout=5) as resp:
        state: dict[str, Any] = json.loads(resp.read())
    return state


def _wait_up(proc: subprocess.Popen[str], state_dir: Path) -> dict[str, Any]:
    end = time.monotonic() + UP_DEADLINE_S
    while time.monotonic() < end:
        assert proc.poll() is None, "drwatch sandbox exited early"
        if (state_dir / "sandbox.json").exists():
            try:
                state = _state(state_dir)
            except OSError:
                state = {}
            if state.get("watcher_pid"):
                return state
        time.sleep(0.2)
    raise AssertionError("the sandbox did not come up")


def _ports(state: dict[str, Any]) -> list[int]:
    urls = [state["api"], state["control"], state["service"], state["moto"]]
    urls += [*state["front"].values(), *state["canaries"].values()]
    addrs = [u.split("//")[1].split("/")[0] for u in urls]
    addrs += [h[k] for h in state["hosts"] for k in ("agent", "app")]
    return [int(a.rsplit(":", 1)[1]) for a in addrs]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


TINY = """
[[region]]
name = "us-west-2"
zones = ["us-west-2a", "us-west-2b"]

[[instance]]
name = "web-1"
role = "app_server"
group = "web"
zone = "us-west-2a"

[[instance]]
name = "web-2"
role = "app_server"
group = "web"
zone = "us-west-2b"
"""


@pytest.fixture
def sandbox(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[subprocess.Popen[str], Path, dict[str, Any]]]:
    need_binary("moto_server", str(Path(sys.executable).parent))
    state_dir = tmp_path / "sb"
    # An earlier run's daemon state, which a new world must not inherit.
    (state_dir / "daemon").mkdir(parents=True)
    (state_dir / "daemon" / "stale-from-an-earlier-run").write_text("old")
    extra: list[str] = []
    if getattr(request, "param", None) == "tiny":
        (tmp_path / "tiny.toml").write_text(TINY)
        extra = ["--topology", str(tmp_path / "tiny.toml")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "drwatch.cli", "sandbox", "--state-dir", str(state_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc, state_dir, _wait_up(proc, state_dir)
    finally:
        _stop(proc, state_dir)


def _stop(proc: subprocess.Popen[str], state_dir: Path) -> None:
    """Stop the sandbox as an operator would (SIGTERM), and only if it will not, kill its
    process group; then end what a killed sandbox leaves (its moto runs in a session of
    its own and names no state dir, so only the sandbox's own reaper finds it)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    reap_leftovers(state_dir, STATE_FILE)
    for child in psutil.process_iter():
        try:
            if str(state_dir) in " ".join(child.cmdline()):
                child.kill()
        except psutil.Error:
            pass


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_everything_and_frees_every_port(
    sandbox: tuple[subprocess.Popen[str], Path, dict[str, Any]], sig: signal.Signals
) -> None:
    """After SIGTERM/SIGINT no child process is alive and no sandbox port listens."""
    proc, _, state = sandbox
    children = psutil.Process(proc.pid).children(recursive=True)
    assert {state["watcher_pid"]} <= {c.pid for c in children}
    ports = _ports(state)
    assert all(_listening(p) for p in ports if p != int(state["api"].rsplit(":", 1)[1]))
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
    assert [p for p in ports if _listening(p)] == []


def test_written_config_is_valid_and_faults_come_from_the_command_line(
    sandbox: tuple[subprocess.Popen[str], Path, dict[str, Any]],
) -> None:
    """A start forgets the daemon's old state; the printed status/API address answers;
    check-config accepts the sandbox's config;
    `sandbox fault`/`heal` reach the sandbox,
    a bad fault exits 2 naming the problem, and kill-watcher restarts the daemon."""
    proc, state_dir, state = sandbox
    assert not (state_dir / "daemon" / "stale-from-an-earlier-run").exists()
    check = _drwatch("check-config", state["config"])
    assert check.returncode == 0, check.stderr
    assert "groups: 6" in check.stdout
    assert proc.stdout is not None
    printed = "".join(proc.stdout.readline() for _ in range(3))
    status_url = f"{state['api']}/api/v1/status"
    assert status_url in printed
    with urllib.request.urlopen(status_url, timeout=5) as resp:
        assert resp.status == 200

    done = _drwatch("sandbox", "fault", "fail-app", "app-2", "--state-dir", str(state_dir))
    assert done.returncode == 0, done.stderr
    assert [f["do"] for f in _state(state_dir)["faults"]] == ["fail-app"]
    bad = _drwatch("sandbox", "fault", "zone-outage", "app-2", "--state-dir", str(state_dir))
    assert bad.returncode == 2
    assert "needs a zone" in bad.stderr
    healed = _drwatch("sandbox", "heal", "app-2", "--state-dir", str(state_dir))
    assert healed.returncode == 0
    assert _state(state_dir)["faults"] == []

    old = state["watcher_pid"]
    killed = _drwatch(
        "sandbox",
        "fault",
        "kill-watcher",
        "watcher",
        "--delay",
        "1s",
        "--state-dir",
        str(state_dir),
    )
    assert killed.returncode == 0, killed.stderr
    assert not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE
    end = time.monotonic() + 20
    while _state(state_dir)["watcher_pid"] in (None, old):
        assert time.monotonic() < end, "the daemon was not restarted"
        time.sleep(0.2)


@pytest.mark.parametrize("sandbox", ["tiny"], indirect=True)
def test_another_topology_is_seeded_and_watched(
    sandbox: tuple[subprocess.Popen[str], Path, dict[str, Any]],
) -> None:
    """--topology FILE seeds that world instead, and the written config watches it."""
    _, state_dir, state = sandbox
    assert sorted(h["name"] for h in state["hosts"]) == ["web-1", "web-2"]
    assert all(h["app_listening"] for h in state["hosts"])
    assert list(state["front"]) == ["us-west-2"]
    check = _drwatch("check-config", str(state_dir / "drwatch.toml"))
    assert check.returncode == 0, check.stderr
    assert "groups: 1 (1 app_server)" in check.stdout


def test_a_killed_sandbox_leaves_nothing_for_long_and_a_live_one_keeps_its_dir(
    sandbox: tuple[subprocess.Popen[str], Path, dict[str, Any]],
) -> None:
    """A second sandbox on a live one's state dir refuses to start; after the first is
    SIGKILLed (its moto and daemon outlive it), the next start on that dir ends them."""
    proc, state_dir, _ = sandbox
    second = _drwatch("sandbox", "--state-dir", str(state_dir))
    assert second.returncode == 1
    assert "already running" in second.stderr
    orphans = psutil.Process(proc.pid).children(recursive=True)
    assert orphans
    proc.kill()
    proc.wait()
    assert all(o.is_running() for o in orphans)
    again = subprocess.Popen(
        [sys.executable, "-m", "drwatch.cli", "sandbox", "--state-dir", str(state_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _, alive = psutil.wait_procs(orphans, timeout=30)
        assert alive == []
    finally:
        again.terminate()
        again.wait(timeout=30)
