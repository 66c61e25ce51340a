"""The real drwatch daemon, watching the sandbox: its config, and its process.

`render_config` writes a drwatch config (valid for `drwatch.config.load`) for the
sandbox's world with sandbox timing; `WatcherProcess` runs `drwatch run` as a separate
process and can SIGKILL and restart it on the same state directory (kill-watcher).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from drwatch.logs import get_logger
from drwatch.model.fleet import Role
from drwatch.sandbox.topology import GROUP_TAG, Topology

log = get_logger(component="sandbox.watcher")

# The port in app checks is a placeholder: every sandbox instance carries a
# `drwatch:app-addr` tag with its loopback address, which overrides it.
APP_PORT = 8080
HEALTH_PATH = "/healthz"


def sandbox_env() -> dict[str, str]:
    """The daemon's environment: the sandbox's own dummy credentials, never an operator's
    real AWS profile (the endpoints are loopback, but a credential chain would still be read)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="sandbox", AWS_SECRET_ACCESS_KEY="sandbox")  # noqa: S106
    return env


@dataclass(frozen=True)
class WorldAddresses:
    """Where the sandbox's parts listen, as the daemon's config needs them."""

    listen: str
    state_dir: Path
    secret_file: Path
    endpoints: dict[str, str]
    service_url: str
    canaries: dict[str, str]
    # Alertmanager replicas the daemon pushes alerts to; none: no [alerts] section.
    alertmanager_urls: tuple[str, ...] = ()
    # The daemon's API token (pause, resume, approve through its API); none: no token.
    api_token_file: Path | None = None


def _q(value: object) -> str:
    """A TOML value: JSON's strings, numbers and booleans are valid TOML."""
    return json.dumps(value)


def render_config(topo: Topology, where: WorldAddresses) -> str:
    lines = [
        "# Written by `drwatch sandbox`: the world it simulates, with sandbox timing.",
        "[watcher]",
        f"name = {_q('sandbox')}",
        f"listen = {_q(where.listen)}",
        f"state_dir = {_q(str(where.state_dir))}",
        'log_format = "json"',
        *([f"api_token_file = {_q(str(where.api_token_file))}"] if where.api_token_file else []),
        "",
        "[objectives]",
        'rpo = "15m"',
        'rto = "2m"',
        "",
        "[provider]",
        f"regions = {_q(topo.regions)}",
        'discovery_interval = "2s"',
        "[provider.endpoints]",
        *(f"{_q(r)} = {_q(url)}" for r, url in where.endpoints.items()),
        "",
        "[agent]",
        f"secret_file = {_q(str(where.secret_file))}",
        # The master secret: each simulated agent has its own, derived from it.
        "per_host_secrets = true",
        # Every simulated agent listens on its own loopback port, named by this tag.
        "allow_address_tag = true",
        "",
        *_timing(),
        *_policy(),
        *_trends(),
        *_plan(),
        *_alerts(where),
    ]
    for name, specs in topo.groups().items():
        lines += _group(topo, name, specs[0].role, len(specs), where.service_url)
    for name, url in where.canaries.items():
        lines += ["[[canaries]]", f"name = {_q(name)}", f"url = {_q(url)}", ""]
    return "\n".join(lines) + "\n"


def _timing() -> list[str]:
    rows = {
        "provider": ("2s", "1s", 1, 2),
        "agent": ("1s", "500ms", 2, 3),
        "app": ("1s", "500ms", 2, 3),
        "canary": ("1s", "500ms", 2, 3),
    }
    out = []
    for layer, (interval, timeout, rise, fall) in rows.items():
        out += [
            f"[timing.{layer}]",
            f"interval = {_q(interval)}",
            f"timeout = {_q(timeout)}",
            f"rise = {rise}",
            f"fall = {fall}",
            "",
        ]
    return out


def _policy() -> list[str]:
    return [
        "[policy]",
        'warmup = "5s"',
        'cooldown = "1m"',
        "max_concurrent = 3",
        'dead_grace = "4s"',
        "",
    ]


def _trends() -> list[str]:
    # A drill lasts minutes: fit a minute of one-second samples, warn an hour ahead.
    return [
        "[trends]",
        'window = "60s"',
        "min_samples = 10",
        'disk_full_horizon = "1h"',
        'sustain = "30s"',
        "",
    ]


def _plan() -> list[str]:
    # `drwatch plan` on a sandbox: someone to call, so only drills and readiness decide.
    return [
        "[plan]",
        'title = "Sandbox: disaster-recovery plan"',
        'service = "The simulated shop of `drwatch sandbox` (two regions, on this machine)."',
        "[[plan.owners]]",
        'name = "You"',
        'role = "sandbox operator"',
        "[[plan.approvers]]",
        'name = "You"',
        "[[plan.escalation]]",
        'name = "You"',
        "",
    ]


def _alerts(where: WorldAddresses) -> list[str]:
    if not where.alertmanager_urls:
        return []
    return [
        "[alerts]",
        f"alertmanager_urls = {_q(list(where.alertmanager_urls))}",
        # generatorURL in each alert: the sandbox daemon's status page.
        f"external_url = {_q(f'http://{where.listen}/')}",
        "",
    ]


def _group(topo: Topology, name: str, role: Role, size: int, service_url: str) -> list[str]:
    lines = [
        "[[groups]]",
        f"name = {_q(name)}",
        f"role = {_q(role.value)}",
        f"size = {size}",
    ]
    eip = next((i.elastic_ip for i in topo.instance if i.group == name and i.elastic_ip), None)
    if eip:
        lines += [f"elastic_ip = {_q(eip)}", f"service_url = {_q(service_url)}"]
    lines += [
        "[groups.select.tags]",
        f"{_q(GROUP_TAG)} = {_q(name)}",
        "[[groups.checks]]",
        'name = "health"',
        f"port = {APP_PORT}",
        f"path = {_q(HEALTH_PATH)}",
        "[groups.checks.json_field]",
        'path = "status"',
        'equals = "ok"',
        "",
    ]
    return lines


class WatcherProcess:
    """`drwatch run --config PATH` in its own process group, its output in `log_path`."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def start(self) -> None:
        if self.pid is not None:
            return
        with self.log_path.open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "drwatch.cli", "run", "--config", str(self.config_path),
                stdout=out, stderr=out, start_new_session=True, env=sandbox_env(),
            )  # fmt: skip
        log.info("watcher.start", pid=self._proc.pid)

    async def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown path runs."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            log.info("watcher.killed", pid=proc.pid)

    async def stop(self, grace_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            async with asyncio.timeout(grace_s):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.info("watcher.stop", pid=proc.pid, code=proc.returncode)
