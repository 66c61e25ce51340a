"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.services import free_port, need_binary, process, wait_http

# Tests talk to moto only: never let a stray call reach a real cloud account.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)


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
