"""sd_notify: messages reach a real unix datagram socket, as systemd would receive them."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from drwatch.notify import NullNotifier, SdNotifier, notifier_from_env, watchdog_interval


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A fake NOTIFY_SOCKET: a bound datagram socket in tmp."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield path, sock
    finally:
        sock.close()


def _received(sock: socket.socket, count: int) -> list[str]:
    return [sock.recv(4096).decode() for _ in range(count)]


def test_ready_and_watchdog_arrive(listener: tuple[str, socket.socket]) -> None:
    """READY=1, WATCHDOG=1, STATUS and STOPPING=1 each arrive as one datagram, in order."""
    path, sock = listener
    notifier = notifier_from_env({"NOTIFY_SOCKET": path})
    assert isinstance(notifier, SdNotifier)
    notifier.ready()
    notifier.watchdog()
    notifier.status("no action: 11/11\nhealthy")
    notifier.stopping()
    notifier.close()
    assert _received(sock, 4) == [
        "READY=1",
        "WATCHDOG=1",
        "STATUS=no action: 11/11 healthy",
        "STOPPING=1",
    ]


def test_abstract_namespace_socket() -> None:
    """An address written as '@name' reaches the abstract-namespace socket 'name'."""
    name = f"drwatch-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        notifier = SdNotifier("@" + name)
        notifier.watchdog()
        notifier.close()
        assert sock.recv(64) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_unset_socket_gives_null_notifier() -> None:
    """Without NOTIFY_SOCKET (not under systemd) every call is a harmless no-op."""
    notifier = notifier_from_env({})
    assert isinstance(notifier, NullNotifier)
    notifier.ready()
    notifier.watchdog()


def test_missing_socket_never_raises(tmp_path: Path) -> None:
    """A socket that went away does not take the loop down: the send is dropped."""
    notifier = SdNotifier(str(tmp_path / "gone.sock"))
    notifier.ready()
    notifier.watchdog()
    notifier.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    """The heartbeat period is half of WATCHDOG_USEC, and only for the process systemd named."""
    assert watchdog_interval(env) == expected
