"""`drwatch sandbox`'s backups end to end: the real daemon, real gpg, two moto servers.

In a fresh sandbox every class shows verified backups at every location within two
minutes, in the API, the status document and `drwatch backups`; by default the watcher
holds no private key and can neither read nor use one; with `watcher_key` it gets its
own copy, named in its config.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest

from drwatch.sandbox.backups import SandboxBackups, make_key_pair
from drwatch.sandbox.cloud import CREDENTIALS
from drwatch.sandbox.listener import Gate
from drwatch.sandbox.topology import default_topology
from drwatch.sandbox.world import Options, Sandbox
from tests.support.services import need_binary

pytestmark = pytest.mark.services

LOCATIONS = {"primary", "standby_region", "offsite"}
EVERYWHERE = {
    "orders": LOCATIONS,
    "app-config": LOCATIONS,
    "images": {"primary", "standby_region"},
}


async def get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
        resp.raise_for_status()
        return await resp.json()


def verified_at(doc: Any) -> dict[str, set[str]]:
    """Each class's locations that hold a verified backup, from GET /api/v1/backups."""
    return {
        c["data_class"]: {loc["location"] for loc in c["locations"] if loc["newest_verified"]}
        for c in doc["classes"]
    }


async def wait_everywhere(sb: Sandbox, session: aiohttp.ClientSession) -> Any:
    """The backups document once every class is verified at every location (2 min)."""
    async with asyncio.timeout(120):
        while True:
            try:
                doc = await get(session, f"{sb.api_url}/api/v1/backups")
                if all(verified_at(doc).get(c) == locs for c, locs in EVERYWHERE.items()):
                    return doc
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(1)


@pytest.mark.timeout(240)
async def test_a_fresh_sandbox_backs_up_every_class_everywhere_without_the_private_key(
    tmp_path: Path,
) -> None:
    need_binary("moto_server", str(Path(sys.executable).parent))
    gpg = need_binary("gpg")
    sb = Sandbox(default_topology(), tmp_path / "sb", Options(backups=True))
    async with sb, aiohttp.ClientSession() as session:
        doc = await wait_everywhere(sb, session)
        assert not doc["watcher_holds_private_key"]
        scratch = next(c for c in doc["classes"] if c["data_class"] == "scratch")
        assert scratch["backed_up"] is False
        status = await get(session, f"{sb.api_url}/api/v1/status")
        shown = {(c["data_class"], c["location"]) for c in status["backups"]["classes"]}
        assert shown == {(c, loc) for c, locs in EVERYWHERE.items() for loc in locs}
        assert status["backups"]["not_backed_up"] == ["scratch"]
        assert not [f for f in status["findings"] if f["finding"].startswith("backup_")]
        await asyncio.to_thread(check_cli_and_custody, sb, gpg)


def check_cli_and_custody(sb: Sandbox, gpg: str) -> None:
    """`drwatch backups` names every class and location; the watcher names no private
    key, keeps none in its state, and its gpg home cannot decrypt a backup."""
    cli = subprocess.run(
        [sys.executable, "-m", "drwatch.cli", "backups", "--api", sb.api_url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    for name in ("orders", "app-config", "images", "offsite"):
        assert name in cli.stdout

    # The watcher's custody: no private key named, none in its state, none usable.
    config = (sb.state_dir / "drwatch.toml").read_text()
    assert "watcher_private_key_file" not in config
    daemon = sb.state_dir / "daemon"
    for path in daemon.rglob("*"):
        if path.is_file() and path.stat().st_size < 10_000_000:
            assert b"PRIVATE KEY" not in path.read_bytes(), path
    home = daemon / "gnupg"
    listed = subprocess.run(
        [gpg, "--homedir", str(home), "--batch", "--list-secret-keys", "--with-colons"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert b"sec:" not in listed.stdout
    chunk = newest_chunk(sb)
    tried = subprocess.run(
        [gpg, "--homedir", str(home), "--batch", "--no-autostart", "--decrypt"],
        input=chunk, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert tried.returncode != 0
    assert b"No secret key" in tried.stderr or b"no secret key" in tried.stderr.lower()
    # ... while the operator's copy (outside the watcher's state, mode 600) decrypts it.
    assert sb.backups is not None
    assert sb.backups.key is not None
    private = sb.backups.key.private_file
    assert private.stat().st_mode & 0o077 == 0
    assert not private.is_relative_to(daemon)
    # A short keyring path: gpg-agent's socket must fit in 108 bytes (tmp_path may not).
    operator = Path(tempfile.mkdtemp(prefix="drwatch-operator-"))
    base = [gpg, "--homedir", str(operator), "--batch", "--pinentry-mode", "loopback"]
    try:
        subprocess.run([*base, "--import", str(private)], capture_output=True, timeout=60,
                       check=True)  # fmt: skip
        plain = subprocess.run([*base, "--passphrase", "", "--decrypt"], input=chunk,
                               capture_output=True, timeout=60, check=True)  # fmt: skip
    finally:
        subprocess.run(["gpgconf", "--homedir", str(operator), "--kill", "all"],
                       capture_output=True, timeout=60, check=False)  # fmt: skip
        shutil.rmtree(operator, ignore_errors=True)
    assert plain.stdout.startswith(b"-- drwatch sandbox: simulated dump of db-2")


def newest_chunk(sb: Sandbox) -> bytes:
    assert sb.backups is not None
    url = sb.backups.storage_moto.url
    s3: Any = boto3.client("s3", region_name="us-east-1", endpoint_url=url, **CREDENTIALS)
    bucket = "drwatch-backups-us-east-1"
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=bucket, Prefix="drwatch/orders/dump/")["Contents"]
        if o["Key"].endswith(".gpg")
    ]
    body: bytes = s3.get_object(Bucket=bucket, Key=sorted(keys)[-1])["Body"].read()
    return body


def test_the_watcher_key_option_names_the_watchers_own_copy(tmp_path: Path) -> None:
    """With watcher_key, the config names the watcher's own copy (mode 600, not the
    operator's file); without it, no private key is named."""
    need_binary("gpg")
    topo = default_topology()
    for given in (False, True):
        b = SandboxBackups(topo, tmp_path / str(given), lambda: 9, Gate(), _no_session,
                           watcher_key=given)  # fmt: skip
        b.dir.mkdir(parents=True)
        b.key = make_key_pair(b.dir)
        doc = tomllib.loads("\n".join(b.config_lines()))
        named = doc["backup"].get("watcher_private_key_file")
        assert (named is not None) is given
        if named is not None:
            assert Path(named) != b.key.private_file
            assert Path(named).parent == b.dir


def _no_session() -> aiohttp.ClientSession:
    raise AssertionError("no HTTP in this test")


def test_the_key_pair_is_made_under_a_state_directory_of_any_length(tmp_path: Path) -> None:
    """gpg-agent's socket path must fit in 108 bytes: key generation in a scratch keyring
    under a long state directory (pytest's tmp_path on an xdist worker) made gpg exit 2,
    and every sandbox with backups failed to start in CI."""
    need_binary("gpg")
    root = tmp_path / ("d" * 60) / ("e" * 60)
    root.mkdir(parents=True)
    key = make_key_pair(root)
    assert len(key.fingerprint) == 40
    assert key.public_file.read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert key.private_file.stat().st_mode & 0o077 == 0
    assert sorted(p.name for p in root.iterdir()) == ["operator-private.asc", "public.asc"]
