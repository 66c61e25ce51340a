"""`drwatch run` as a process: one daemon per state directory, and the Host check.

Both were tried by hand first: a second daemon on the same state directory ran beside
the first without complaint, and the status API answered a page that reached it under
a foreign name (DNS rebinding).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import MotoServer
from tests.integration.test_daemon import DEADLINE_S, _config
from tests.support.services import free_port

ENV = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _get(port: int, path: str, host: str) -> int:
    return _request(port, path, host)[0]


def _request(port: int, path: str, host: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _wait_serving(proc: subprocess.Popen[bytes], port: int) -> None:
    """Until the daemon's API answers 200 (it is up and holds the lock), with a deadline."""
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        assert proc.poll() is None, "the daemon exited while starting"
        try:
            if _get(port, "/api/v1/status", f"127.0.0.1:{port}") == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the daemon did not serve on {port} within {DEADLINE_S}s")


@contextmanager
def daemon(cfg: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "drwatch.cli", "run", "--config", str(cfg)],
            env=ENV,
            stdout=out,
            stderr=out,
        )
    try:
        _wait_serving(proc, port)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=DEADLINE_S)


def _second_config(first: Path, first_port: int, port: int) -> Path:
    """The same config (same state directory) listening elsewhere, so only the lock can stop it."""
    second = first.with_name("second.toml")
    second.write_text(first.read_text().replace(f"127.0.0.1:{first_port}", f"127.0.0.1:{port}"))
    return second


def test_second_daemon_on_the_same_state_dir_exits_2_naming_the_holder(
    moto: MotoServer, tmp_path: Path
) -> None:
    """While one daemon runs, another on its state directory exits 2 and names the
    holder's PID; after the holder is killed with SIGKILL, a new daemon starts there."""
    port, other_port = free_port(), free_port()
    cfg = _config(tmp_path, moto, port)
    second = _second_config(cfg, port, other_port)
    with daemon(cfg, port, tmp_path / "first.log") as first:
        out = subprocess.run(
            [sys.executable, "-m", "drwatch.cli", "run", "--config", str(second)],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            check=False,
        )
        assert out.returncode == 2, out.stderr
        assert f"another drwatch (PID {first.pid}) is running on the state directory" in (
            out.stderr
        )
        assert "Traceback" not in out.stderr
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=DEADLINE_S)
    # The kernel released the lock with the killed process: no stale lock to clean up.
    with daemon(second, other_port, tmp_path / "third.log") as third:
        assert third.poll() is None


def test_api_refuses_a_foreign_host_name(moto: MotoServer, tmp_path: Path) -> None:
    """A request under a name drwatch is not known by (a DNS-rebinding page) gets 421;
    its own address, localhost and the external URL's host are served."""
    port = free_port()
    cfg = _config(tmp_path, moto, port)
    text = cfg.read_text()
    cfg.write_text(
        text.replace(
            "[provider]\n",
            'allowed_hosts = ["watcher-1.internal"]\n[alerts]\n'
            'external_url = "https://drwatch.example.org/"\n[provider]\n',
            1,
        )
    )
    with daemon(cfg, port, tmp_path / "daemon.log"):
        for path in ("/api/v1/status", "/metrics", "/"):
            status, body = _request(port, path, f"rebind.attacker.example:{port}")
            assert status == 421, path
            assert "watcher.allowed_hosts" in json.loads(body)["error"]
            assert b"targets" not in body
        for host in (
            f"127.0.0.1:{port}",
            f"localhost:{port}",
            "drwatch.example.org",
            f"WATCHER-1.internal:{port}",
        ):
            assert _get(port, "/api/v1/status", host) == 200, host
