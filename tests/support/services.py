"""Real services for tests: find the binary, or skip with a reason (fail under CI).

`DRWATCH_REQUIRE_SERVICES=1` turns every "binary missing" skip into a failure, so CI
cannot go green by skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web

REQUIRE = os.environ.get("DRWATCH_REQUIRE_SERVICES") == "1"


def need_binary(name: str, *extra_dirs: str) -> str:
    """The binary's path; skip (or fail under DRWATCH_REQUIRE_SERVICES=1) when absent."""
    found = shutil.which(name)
    for d in extra_dirs:
        if found is None:
            candidate = Path(d) / name
            found = str(candidate) if candidate.exists() else None
    if found is None:
        msg = f"{name} is not installed (Debian package; ./dev system-deps installs it)"
        if REQUIRE:
            pytest.fail(f"DRWATCH_REQUIRE_SERVICES=1 but {msg}")
        pytest.skip(msg)
    return found


def free_port() -> int:
    """A port free right now. Only for a server in another process that must be told its
    port up front: anything may take the port before that server binds it. In-process
    servers bind port 0 instead (`start_site`), and a port that must refuse connections
    comes from `refused_port`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def start_site(runner: web.AppRunner, ssl_context: ssl.SSLContext | None = None) -> int:
    """Serve a set-up runner on a loopback port the kernel picks while binding it, and
    return that port (a port drawn first and bound later can be taken in between)."""
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    port: int = runner.addresses[-1][1]
    return port


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the block runs: bound, so
    nothing else can take it, but not listening (a freed port may be reused meanwhile)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        yield port


def assert_promtool_clean(exposition: bytes) -> None:
    """`promtool check metrics` reads the exposition with exit 0 and not one lint line."""
    promtool = need_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=60,
        check=False,
    )
    out, err = result.stdout.decode().strip(), result.stderr.decode().strip()
    assert result.returncode == 0, err + out
    assert out == "", out
    assert err == "", err


def wait_http(
    url: str, deadline_s: float = 20.0, *, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll `url` until it answers 2xx, or fail after the deadline.

    Only a success counts as ready: Prometheus and Alertmanager answer 503 on
    `/-/ready` while they are still loading, and an API call made then fails too
    (a CI run once flaked on exactly that when any HTTP answer counted).

    With `proc` (the server, started on a port drawn with `free_port`), the answer must
    come while that process still runs: when something else took the port first, our
    server dies on bind and the 2xx would be the other one's (another test session's
    moto_server, say), so that fails at once instead of testing the wrong server.
    """
    end = time.monotonic() + deadline_s
    last = "no answer"
    while True:
        _still_running(proc, url)
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if 200 <= resp.status < 300:
                    _still_running(proc, url)
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        if time.monotonic() > end:
            raise TimeoutError(f"{url} was not ready within {deadline_s}s (last: {last})")
        time.sleep(0.05)


def _still_running(proc: subprocess.Popen[bytes] | None, url: str) -> None:
    if proc is not None and proc.poll() is not None:
        raise RuntimeError(
            f"{proc.args!r} exited with {proc.returncode} before {url} was ready "
            "(was its port taken by another process?)"
        )


@contextmanager
def process(
    argv: Sequence[str], *, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process and make sure it is gone afterwards."""
    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
