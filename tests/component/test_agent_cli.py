"""`drwatch agent --config PATH` as its own process: serves signed facts, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp

from drwatch.config import AgentClientConfig
from drwatch.model.fleet import Instance, Role
from drwatch.model.observation import Health
from drwatch.observe.agent import AgentClient
from tests.support.services import free_port

SECRET = "cli-secret-0123456789abcdef"


async def poll_until_up(client: AgentClient, instance: Instance, deadline_s: float) -> Health:
    """Poll until the agent answers UP or the deadline passes; the last health seen."""
    health = Health.UNKNOWN
    async with asyncio.timeout(deadline_s):
        while health is not Health.UP:
            health = (await client.check(instance, timeout_s=1.0)).health
            if health is not Health.UP:
                await asyncio.sleep(0.05)
    return health


async def test_agent_process_serves_facts_and_stops_cleanly(tmp_path: Path) -> None:
    """The agent process answers a signed poll, logs JSON lines, and exits 0 on SIGTERM."""
    secret = tmp_path / "agent.secret"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    port = free_port()
    id_file = tmp_path / "instance-id"  # as cloud-init writes it
    id_file.write_text("i-1\n")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'listen = "127.0.0.1:{port}"\nsecret_file = "{secret}"\nlog_format = "json"\n'
        f'instance_id_file = "{id_file}"\n'
        f'[[checks]]\nkind = "disk_free"\nname = "tmp"\npath = "{tmp_path}"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "drwatch.cli", "agent", "--config", str(cfg)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        instance = Instance(
            "i-1", "app-1", "us-east-1", "us-east-1a", Role.APP_SERVER, "app",
            tags=(("drwatch:agent-addr", f"127.0.0.1:{port}"),),
        )  # fmt: skip
        client_cfg = AgentClientConfig(secret_file=secret, allow_address_tag=True)
        async with aiohttp.ClientSession() as session:
            client = AgentClient(client_cfg, SECRET.encode(), session)
            assert await poll_until_up(client, instance, deadline_s=20.0) is Health.UP
            obs = await client.check(instance, timeout_s=2.0)
        assert obs.detail["checks"]["tmp"]["kind"] == "disk_free"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    events = [json.loads(line)["event"] for line in err.decode().splitlines()]
    assert events[0] == "agent.started"
    assert events[-1] == "agent.stopped"
