"""What a sandbox killed with SIGKILL leaves behind, found and ended by the next start.

A sandbox stops its moto and its daemon on every exit it sees; SIGKILL it does not see.
Both run in their own sessions, so they outlive it. The next sandbox on the same state
directory reads the old `sandbox.json`, and ends exactly those: the moto_servers on the
recorded ports (the cloud's, and with backups the object storage's and the off-site
provider's) and the daemon running the recorded config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil

from drwatch.logs import get_logger
from drwatch.sandbox.cloud import SandboxError

log = get_logger(component="sandbox")


def _owner_alive(info: dict[str, Any]) -> bool:
    pid = info.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False
    return "drwatch" in cmdline and ("sandbox" in cmdline or "drill" in cmdline)


def _is_leftover(cmdline: list[str], moto_ports: frozenset[str], config: str) -> bool:
    if any(arg.endswith("moto_server") for arg in cmdline):
        return "-p" in cmdline and any(port in cmdline for port in moto_ports)
    return bool(config) and config in cmdline and "run" in cmdline


def _moto_ports(info: dict[str, Any]) -> frozenset[str]:
    urls = info.get("motos")
    if not isinstance(urls, list):  # a sandbox.json written before "motos"
        urls = [info.get("moto", "")]
    ports = (urlparse(str(url)).port for url in urls)
    return frozenset(str(port) for port in ports if port)


def reap_leftovers(state_dir: Path, state_file: str) -> list[int]:
    """End the old moto and daemon of `state_dir`; refuse when its sandbox still runs."""
    try:
        info = json.loads((state_dir / state_file).read_text())
    except (OSError, ValueError):
        return []
    if _owner_alive(info):
        raise SandboxError(f"a sandbox (pid {info['pid']}) is already running in {state_dir}")
    moto_ports = _moto_ports(info)
    config = str(info.get("config", ""))
    ended = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.pid != os.getpid() and moto_ports and _is_leftover(cmdline, moto_ports, config):
            try:
                proc.kill()
                proc.wait(timeout=5)
                ended.append(proc.pid)
            except psutil.Error:
                continue
    if ended:
        log.info("sandbox.leftovers_ended", pids=ended, state_dir=str(state_dir))
    return ended
