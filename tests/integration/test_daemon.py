"""`drwatch run` as a process: systemd notifications, discovery through moto, clean stop."""

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

import boto3
import pytest

from tests.conftest import MotoServer
from tests.support.services import free_port

DEADLINE_S = 30.0


def _seed(moto: MotoServer) -> list[str]:
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto.url)
    image = ec2.register_image(Name="app-image")["ImageId"]
    ids = []
    for name in ("app-1", "app-2"):
        out = ec2.run_instances(
            ImageId=image,
            MinCount=1,
            MaxCount=1,
            Placement={"AvailabilityZone": "us-east-1a"},
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [
                        {"Key": "Name", "Value": name},
                        {"Key": "drwatch:group", "Value": "app"},
                    ],
                }
            ],
        )
        ids.append(out["Instances"][0]["InstanceId"])
    return ids


def _config(tmp: Path, moto: MotoServer, port: int) -> Path:
    secret = tmp / "agent.secret"
    secret.write_text("0123456789abcdef0123456789abcdef")
    secret.chmod(0o600)
    path = tmp / "drwatch.toml"
    path.write_text(
        f"""
[watcher]
name = "itest"
listen = "127.0.0.1:{port}"
state_dir = "{tmp / "state"}"
log_format = "json"
[provider]
regions = ["us-east-1"]
discovery_interval = "1s"
endpoints = {{ "us-east-1" = "{moto.url}" }}
[agent]
secret_file = "{secret}"
[timing.provider]
interval = "1s"
timeout = "500ms"
[timing.agent]
interval = "1s"
timeout = "200ms"
[policy]
dead_grace = "1s"
dry_run = true
[[groups]]
name = "app"
role = "app_server"
select.tags = {{ "drwatch:group" = "app" }}
"""
    )
    return path


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(DEADLINE_S)
    yield sock, path
    sock.close()


def _wait_for(sock: socket.socket, message: str) -> list[str]:
    """Every notification until one carries `message`."""
    seen: list[str] = []
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        got = sock.recv(4096).decode()
        seen.append(got)
        if message in got.splitlines():
            return seen
    raise AssertionError(f"{message} never arrived; got {seen}")


def _status(port: int) -> dict[str, object]:
    url = f"http://127.0.0.1:{port}/api/v1/status"
    with urllib.request.urlopen(url, timeout=5) as resp:
        doc: dict[str, object] = json.load(resp)
        return doc


def _until_finding(port: int, finding: str) -> dict[str, object]:
    """The status once it lists `finding` (readiness is judged every few seconds)."""
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        status = _status(port)
        found = status.get("findings")
        if isinstance(found, list) and any(f.get("finding") == finding for f in found):
            return status
        time.sleep(0.5)
    raise AssertionError(f"{finding} never showed in the status")


def test_daemon_notifies_systemd_discovers_and_stops_cleanly(
    moto: MotoServer, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    """READY=1 after the first discovery, WATCHDOG=1 from the tick, the fleet in the API,
    and on SIGTERM: STOPPING=1, exit 0, the port released."""
    ids = _seed(moto)
    port = free_port()
    sock, sock_path = notify_socket
    env = {
        **os.environ,
        "NOTIFY_SOCKET": sock_path,
        "WATCHDOG_USEC": "2000000",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    cfg = _config(tmp_path, moto, port)
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "drwatch.cli", "run", "--config", str(cfg)],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        _wait_for(sock, "READY=1")
        env["WATCHDOG_PID"] = str(proc.pid)
        _wait_for(sock, "WATCHDOG=1")
        status = _status(port)
        targets = status["targets"]
        assert isinstance(targets, list)
        assert sorted(t["id"] for t in targets) == sorted(ids)
        watcher = status["watcher"]
        assert isinstance(watcher, dict)
        assert watcher["dry_run"] is True
        # Readiness beside the tick: both app servers sit in us-east-1a, and with no
        # database and a single region nothing stands by.
        status = _until_finding(port, "group_single_zone")
        readiness = status["readiness"]
        assert isinstance(readiness, dict)
        assert readiness["regional_fallback"] is False
        proc.send_signal(signal.SIGTERM)
        _wait_for(sock, "STOPPING=1")
        assert proc.wait(timeout=DEADLINE_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    with socket.socket() as probe:
        # SO_REUSEADDR tolerates TIME_WAIT leftovers but not a socket still listening.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
        probe.listen()


def test_daemon_refuses_a_readable_secret(moto: MotoServer, tmp_path: Path) -> None:
    """A secret readable by others stops the start with exit 2 and says how to fix it."""
    cfg = _config(tmp_path, moto, free_port())
    (tmp_path / "agent.secret").chmod(0o644)
    out = subprocess.run(
        [sys.executable, "-m", "drwatch.cli", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert out.returncode == 2
    assert "chmod 600" in out.stderr
