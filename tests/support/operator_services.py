"""Operator-side services for tests: a real Alertmanager and headless Chromium.

Shared by the component tests (tests/integration/test_alertmanager.py,
test_status_page.py) and the sandbox acceptance (test_operator_e2e.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.services import free_port, need_binary, process, wait_http

# Every alert goes nowhere: the tests read Alertmanager's own API, not a receiver.
AM_CONFIG = """\
route:
  receiver: blackhole
  group_wait: 1s
receivers:
  - name: blackhole
"""


@contextmanager
def alertmanager(binary: str, work: Path) -> Iterator[str]:
    """Alertmanager on loopback with its storage in `work`, alone (no gossip); its URL."""
    port = free_port()
    work.mkdir(parents=True)
    (work / "alertmanager.yml").write_text(AM_CONFIG)
    argv = [
        binary,
        f"--config.file={work / 'alertmanager.yml'}",
        f"--storage.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        # No gossip: each replica stands alone, as drwatch must reach each one.
        "--cluster.listen-address=",
    ]
    with process(argv) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/-/ready", proc=proc)
        yield url


def alertmanager_alerts(url: str) -> list[dict[str, Any]]:
    """GET /api/v2/alerts: every alert not yet resolved (endsAt still ahead)."""
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as resp:
        body: list[dict[str, Any]] = json.load(resp)
        return body


async def chromium(profile_dir: Path, *args: str) -> str:
    """Run headless Chromium (Debian's) once with `args`; its stdout (e.g. --dump-dom)."""
    argv = [
        need_binary("chromium"),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile_dir / 'chromium-profile'}",
        "--virtual-time-budget=5000",
        *args,
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(90):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def dom_text(dom: str) -> str:
    """The visible text of a DOM dump, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
