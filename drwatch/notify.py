"""A tiny sd_notify client: tell systemd we are ready, alive, or stopping.

No dependency: one datagram per message to `$NOTIFY_SOCKET` (a path, or `@name` for
the abstract namespace). When the variable is unset (not under systemd, or not
Type=notify) `notifier_from_env()` returns a null notifier, so the daemon calls the
same methods everywhere. Sending never raises and never blocks: a heartbeat that
cannot be delivered must not take the loop down with it; systemd's watchdog is
what notices.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Protocol

from drwatch.logs import get_logger

log = get_logger(component="notify")


class Notifier(Protocol):
    def ready(self) -> None: ...
    def watchdog(self) -> None: ...
    def stopping(self) -> None: ...
    def status(self, text: str) -> None: ...
    def close(self) -> None: ...


class NullNotifier:
    """Not under systemd: every call is a no-op."""

    def ready(self) -> None:
        pass

    def watchdog(self) -> None:
        pass

    def stopping(self) -> None:
        pass

    def status(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def _socket_address(raw: str) -> str:
    # systemd writes abstract-namespace sockets as "@name"; the kernel wants "\0name".
    return "\0" + raw[1:] if raw.startswith("@") else raw


class SdNotifier:
    """Sends sd_notify messages to one socket. Keeps the socket open between sends."""

    def __init__(self, address: str) -> None:
        self._address = _socket_address(address)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)
        self._failing = False

    def ready(self) -> None:
        self._send("READY=1")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def status(self, text: str) -> None:
        # One line: a newline would start a new assignment in the protocol.
        self._send("STATUS=" + " ".join(text.splitlines()))

    def close(self) -> None:
        self._sock.close()

    def _send(self, message: str) -> None:
        try:
            self._sock.sendto(message.encode(), self._address)
        except OSError as err:
            if not self._failing:
                log.warning("notify.failed", message=message, error=str(err))
            self._failing = True
            return
        if self._failing:
            log.info("notify.recovered")
        self._failing = False


def notifier_from_env(environ: Mapping[str, str] | None = None) -> Notifier:
    """An SdNotifier when `$NOTIFY_SOCKET` is set, else a NullNotifier."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return NullNotifier()
    return SdNotifier(address)


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """How often to send WATCHDOG=1 (seconds), or None when systemd expects no heartbeat.

    systemd sets `WATCHDOG_USEC` (the timeout) and `WATCHDOG_PID` (who must ping; a
    child that inherited the variables must not). We ping at half the timeout, as
    sd_watchdog_enabled(3) advises, so one late tick does not get us killed.
    """
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2_000_000
