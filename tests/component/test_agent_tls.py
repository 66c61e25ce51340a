"""The agent over TLS: a CA and a certificate made in the test with openssl, the real
agent serving HTTPS from its config's cert and key, the daemon's client verifying
against the CA file, and refusing an agent whose certificate another CA signed."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from drwatch.agent.server import create_app, serving, tls_context
from drwatch.config import AgentClientConfig
from drwatch.errors import ConfigError
from drwatch.model.observation import Health
from drwatch.observe.agent import AgentClient, client_tls_context
from tests.component.test_agent_cli import poll_until_up
from tests.component.test_agent_client import instance_at
from tests.component.test_agent_server import SECRET, FakeHost, agent_cfg
from tests.support.services import free_port, need_binary


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(
        [need_binary("openssl"), *args], cwd=cwd, check=True, capture_output=True, timeout=60
    )


def make_ca(where: Path, name: str) -> Path:
    """A self-signed CA (P-256): `<name>.pem` and `<name>.key` in `where`."""
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign",
        cwd=where,
    )  # fmt: skip
    return where / f"{name}.pem"


def make_agent_cert(where: Path, ca: str, ip: str = "127.0.0.1") -> tuple[Path, Path]:
    """A server certificate for the agent at `ip` (an IP SAN), signed by the CA `ca`."""
    (where / "agent.ext").write_text(
        f"subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "agent.key", "-out", "agent.csr", "-subj", "/CN=db-2",
        cwd=where,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "agent.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", "agent.pem", "-days", "1", "-extfile", "agent.ext",
        cwd=where,
    )  # fmt: skip
    return where / "agent.pem", where / "agent.key"


@pytest.fixture
async def tls_agent(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """The real agent serving HTTPS with a certificate from a test CA; (port, CA file)."""
    ca = make_ca(tmp_path, "ca")
    cert, key = make_agent_cert(tmp_path, "ca")
    cfg = agent_cfg(tls_cert_file=str(cert), tls_key_file=str(key))
    app = create_app(cfg, FakeHost(), {}, {}, secret=SECRET, hostname="db-2")
    async with serving(app, "127.0.0.1", 0, tls_context(cfg)) as port:
        yield port, ca


def https_cfg(port: int, ca: Path) -> AgentClientConfig:
    return AgentClientConfig.model_validate(
        {"secret_file": "/unused", "scheme": "https", "tls_ca_file": str(ca), "port": port}
    )


async def _check(cfg: AgentClientConfig, port: int) -> tuple[Health, str]:
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        client = AgentClient(cfg, SECRET, session)
        obs = await client.check(instance_at(port, private_ip="127.0.0.1"), timeout_s=5.0)
        return obs.health, obs.reason


async def test_agent_over_tls_verified_against_the_ca_file(tls_agent: tuple[int, Path]) -> None:
    """scheme https and the CA that signed the agent's certificate: the facts arrive."""
    port, ca = tls_agent
    assert await _check(https_cfg(port, ca), port) == (Health.UP, "")


async def test_certificate_from_another_ca_is_unknown_not_down(
    tls_agent: tuple[int, Path], tmp_path: Path
) -> None:
    """An agent whose certificate our CA did not sign is not believed: UNKNOWN, tls."""
    port, _ = tls_agent
    stranger = tmp_path / "other"
    stranger.mkdir()
    other_ca = make_ca(stranger, "other-ca")
    health, reason = await _check(https_cfg(port, other_ca), port)
    assert health is Health.UNKNOWN
    assert reason.startswith("tls: "), reason
    assert "certificate verify failed" in reason


async def test_plain_http_client_gets_nothing_from_a_tls_agent(
    tls_agent: tuple[int, Path],
) -> None:
    """The TLS agent does not also speak plain HTTP."""
    port, _ = tls_agent
    cfg = AgentClientConfig.model_validate({"secret_file": "/unused", "port": port})
    health, _ = await _check(cfg, port)
    assert health is Health.UNKNOWN


def test_unloadable_tls_files_are_config_errors(tmp_path: Path) -> None:
    """A certificate or CA file that cannot be loaded is a clear ConfigError (exit 2)."""
    missing = tmp_path / "missing.pem"
    cfg = agent_cfg(tls_cert_file=str(missing), tls_key_file=str(missing))
    with pytest.raises(ConfigError, match="tls_cert_file/tls_key_file: cannot load"):
        tls_context(cfg)
    with pytest.raises(ConfigError, match=r"agent\.tls_ca_file: cannot load"):
        client_tls_context(https_cfg(9180, missing))


def test_tls_keys_are_validated_together() -> None:
    """A certificate without its key, or a CA file with plain http, is refused at load."""
    with pytest.raises(ConfigError, match="tls_cert_file and tls_key_file go together"):
        agent_cfg(tls_cert_file="/etc/drwatch/agent.pem")
    with pytest.raises(ValueError, match='tls_ca_file is set but scheme is not "https"'):
        AgentClientConfig.model_validate({"secret_file": "/x", "tls_ca_file": "/ca.pem"})


async def test_agent_process_serves_https_from_its_config(tmp_path: Path) -> None:
    """`drwatch agent` with tls_cert_file/tls_key_file serves HTTPS that the daemon's
    client verifies against the CA; it logs an https listen address."""
    make_ca(tmp_path, "ca")
    cert, key = make_agent_cert(tmp_path, "ca")
    secret = tmp_path / "agent.secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    port = free_port()
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'listen = "127.0.0.1:{port}"\nsecret_file = "{secret}"\ninstance_id = "i-0db2"\n'
        f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\nlog_format = "json"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "drwatch.cli", "agent", "--config", str(cfg)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as session:
            client = AgentClient(https_cfg(port, tmp_path / "ca.pem"), SECRET, session)
            instance = instance_at(port, private_ip="127.0.0.1")
            assert await poll_until_up(client, instance, deadline_s=20.0) is Health.UP
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    started = json.loads(err.decode().splitlines()[0])
    assert (started["event"], started["listen"]) == ("agent.started", f"https://127.0.0.1:{port}")
