"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drwatch.sandbox.world import PORTS_ENV, port_range
from tests.support.services import free_port, need_binary, process, wait_http

# Tests talk to moto only: never let a stray call reach a real cloud account.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)


def _sandbox_port_slice() -> None:
    """Under pytest-xdist, give each worker its own slice of the sandbox's port range.

    Drills run side by side (`./dev test` runs them on several workers): two sandboxes
    in two processes drawing from one range could pick the same port for hosts that
    have not booted yet, and the second would never come up.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count < 2:
        return
    low, high = port_range()  # $DRWATCH_SANDBOX_PORTS when set: the workers share it out
    size = (high - low + 1) // count
    index = int(worker[2:])
    os.environ[PORTS_ENV] = f"{low + index * size}-{low + (index + 1) * size - 1}"


_sandbox_port_slice()


@dataclass
class MotoServer:
    """A moto_server process on loopback. `reset()` wipes its state between tests."""

    url: str
    port: int

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=5).close()


def _moto_binary() -> str:
    return need_binary("moto_server", str(Path(sys.executable).parent))


@pytest.fixture(scope="session")
def moto_session() -> Iterator[MotoServer]:
    port = free_port()
    env = {"MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}
    with process([_moto_binary(), "-H", "127.0.0.1", "-p", str(port)], env=env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/moto-api/", proc=proc)
        yield MotoServer(url=url, port=port)


@pytest.fixture
def moto(moto_session: MotoServer) -> MotoServer:
    """A moto server with empty state for this test."""
    moto_session.reset()
    return moto_session
