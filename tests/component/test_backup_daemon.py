"""`drwatch run` with a `[backup]` section: the recipient checked at start, and the
backups endpoint served (real gpg, moto as the cloud and as the off-site provider)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MotoServer
from tests.integration.test_daemon import _config
from tests.support.backup_services import Keys, gpg_keys, offsite, offsite_session  # noqa: F401
from tests.support.services import free_port

pytestmark = pytest.mark.services
DEADLINE_S = 30.0


def with_backup(
    path: Path, moto: MotoServer, other: MotoServer, keys: Keys, gpg: str = "gpg"
) -> Path:
    creds = path.parent / "offsite.toml"
    creds.write_text('access_key_id = "k"\nsecret_access_key = "s"\n')
    creds.chmod(0o600)
    path.write_text(
        path.read_text()
        + f"""
[objectives.data_classes.orders]
rpo = "10m"
rto = "5m"
[backup]
gpg_binary = "{gpg}"
custody = ["the test's temp dir"]
[backup.recipient]
public_key_file = "{keys.good.public_file}"
fingerprint = "{keys.good.fingerprint}"
[backup.locations.primary]
bucket = "b-primary"
region = "us-east-1"
endpoint = "{moto.url}"
[backup.locations.offsite]
bucket = "b-offsite"
region = "eu-central-1"
endpoint = "{other.url}"
credentials_file = "{creds}"
[backup.classes.orders]
kind = "persistent"
groups = ["app"]
[backup.classes.scratch]
kind = "transient"
"""
    )
    return path


def env() -> dict[str, str]:
    return {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def get_backups(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/backups", timeout=2) as r:
            if r.status == 200:
                doc: dict[str, Any] = json.load(r)
                return doc
    except (urllib.error.URLError, OSError):
        pass
    return None


def test_gpg_missing_stops_the_start(
    moto: MotoServer,
    offsite: MotoServer,  # noqa: F811
    gpg_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    """No gpg where the config says: exit 2 at start, naming the package to install."""
    cfg = with_backup(
        _config(tmp_path, moto, free_port()), moto, offsite, gpg_keys, gpg="/nonexistent/gpg"
    )
    out = subprocess.run(
        [sys.executable, "-m", "drwatch.cli", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=env(),
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert "backup: gpg (/nonexistent/gpg) is not installed" in out.stderr
    assert "gnupg" in out.stderr


def test_the_daemon_serves_the_backup_catalogue(
    moto: MotoServer,
    offsite: MotoServer,  # noqa: F811
    gpg_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    """With backups configured (and no source yet for dumps), the daemon starts, serves
    GET /api/v1/backups with every class and location, and stops cleanly."""
    port = free_port()
    cfg = with_backup(_config(tmp_path, moto, port), moto, offsite, gpg_keys)
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "drwatch.cli", "run", "--config", str(cfg)],
        env=env(),
        stdout=log,
        stderr=log,
    )
    try:
        doc = None
        end = time.monotonic() + DEADLINE_S
        while doc is None and time.monotonic() < end and proc.poll() is None:
            doc = get_backups(port)
            time.sleep(0.1)
        assert doc is not None, (tmp_path / "daemon.log").read_text()
        orders = next(c for c in doc["classes"] if c["data_class"] == "orders")
        assert orders["rpo_s"] == 600.0
        assert {loc["location"] for loc in orders["locations"]} == {"primary", "offsite"}
        assert all(loc["age_s"] is None for loc in orders["locations"])
        assert doc["findings"] == []  # watched for less than the RPO: not breached yet
        scratch = next(c for c in doc["classes"] if c["data_class"] == "scratch")
        assert scratch["backed_up"] is False
        # No watcher key: the restore test is not scheduled, and the answer says why.
        assert doc["restore_test"]["enabled"] is False
        assert "holds no private key" in doc["restore_test"]["why_not"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
