"""The backup service as the daemon runs it: from `[backup]` to scheduled runs, the
API document, the CLI's rendering and the metrics (real gpg, two moto servers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from drwatch.backup.config import MIB, BackupConfig, DataClass
from drwatch.backup.errors import BackupError
from drwatch.backup.metrics import BackupMetrics
from drwatch.backup.model import State
from drwatch.backup.render import render_backups
from drwatch.backup.service import BackupService, open_service
from drwatch.backup.source import Source
from drwatch.backup.store import S3Store
from drwatch.web import backups as backups_web
from drwatch.web.api import add_routes
from tests.component.test_api import make_state
from tests.component.test_backup_pipeline import blocks
from tests.conftest import MotoServer
from tests.support.backup_services import (  # noqa: F401
    Keys,
    export_secret,
    gpg_keys,
    offsite,
    offsite_session,
)
from tests.support.services import assert_promtool_clean

pytestmark = pytest.mark.services

LOCATIONS = {"primary", "standby_region", "offsite"}
RPOS = {"orders": 900.0, "scratch": 900.0}


def backup_config(
    moto: MotoServer, other: MotoServer, keys: Keys, tmp_path: Path, **extra: Any
) -> BackupConfig:
    creds = tmp_path / "offsite.toml"
    creds.write_text('access_key_id = "k"\nsecret_access_key = "s"\n')
    creds.chmod(0o600)
    return BackupConfig.model_validate(
        {
            "recipient": {
                "public_key_file": str(keys.good.public_file),
                "fingerprint": keys.good.fingerprint,
            },
            "custody": ["the test's temp dir"],
            "chunk_size": 5 * MIB,
            "locations": {
                "primary": {"bucket": "b-primary", "region": "us-east-1", "endpoint": moto.url},
                "standby_region": {
                    "bucket": "b-standby",
                    "region": "us-west-2",
                    "endpoint": moto.url,
                },
                "offsite": {
                    "bucket": "b-offsite",
                    "region": "eu-central-1",
                    "endpoint": other.url,
                    "credentials_file": str(creds),
                },
            },
            "classes": {
                "orders": {"kind": "persistent", "groups": ["db"], "dump_every": "10m"},
                "scratch": {"kind": "transient"},
            },
            **extra,
        }
    )


async def make_buckets(cfg: BackupConfig) -> None:
    for name, loc in cfg.locations.configured().items():
        async with S3Store(name, loc) as store:
            await store.ensure_bucket()


async def dump_source(_name: str, _dc: DataClass) -> Source:
    return Source(blocks(6 * MIB), {"system_identifier": "7300"}, {"lsn": "0/1"})


async def wait_verified(service: BackupService, count: int) -> None:
    async with asyncio.timeout(60):
        while True:
            good = [e for e in service.catalogue.entries() if e.state is State.VERIFIED]
            if len(good) >= count:
                return
            await asyncio.sleep(0.1)


@pytest.fixture
async def running(
    moto: MotoServer,
    offsite: MotoServer,  # noqa: F811
    gpg_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[tuple[BackupService, CollectorRegistry]]:
    cfg = backup_config(moto, offsite, gpg_keys, tmp_path)
    await make_buckets(cfg)
    registry = CollectorRegistry()
    async with open_service(
        cfg,
        RPOS,
        tmp_path / "state",
        sources={"dump": dump_source},
        metrics=BackupMetrics(registry),
    ) as service:
        yield service, registry


async def test_a_class_with_no_backup_runs_at_once_and_shows_everywhere(
    running: tuple[BackupService, CollectorRegistry],
    tmp_path: Path,
) -> None:
    """Started with an empty catalogue, the dump job runs at once; the API shows orders
    verified at every location and no finding, the CLI says so in words, and the
    last-verified gauge carries the backup's time for each location."""
    service, registry = running
    await wait_verified(service, 3)

    app = web.Application()
    add_routes(app, make_state(tmp_path, None))
    backups_web.add_routes(app, service)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/v1/backups")
        assert resp.status == 200
        doc = await resp.json()

    orders = next(c for c in doc["classes"] if c["data_class"] == "orders")
    assert {loc["location"] for loc in orders["locations"]} == LOCATIONS
    assert all(not loc["breached"] and loc["age_s"] is not None for loc in orders["locations"])
    assert doc["findings"] == []
    assert doc["recipient_fingerprint"] == service.cfg.recipient.fingerprint  # type: ignore[union-attr]
    assert {b["location"] for b in doc["backups"] if b["state"] == "verified"} == LOCATIONS

    text = render_backups(doc)
    assert "orders (persistent, RPO 15m)" in text
    assert "scratch (transient): not backed up, on purpose" in text
    assert "findings: 0" in text

    exposition = generate_latest(registry)
    created = service.catalogue.entries()[0].created_at
    gauge = {
        sample.labels["location"]: sample.value
        for family in text_string_to_metric_families(exposition.decode())
        if family.name == "drwatch_backup_last_verified_timestamp_seconds"
        for sample in family.samples
        if sample.labels["data_class"] == "orders" and sample.labels["kind"] == "dump"
    }
    assert gauge == dict.fromkeys(LOCATIONS, created)
    rpo = {
        sample.labels["data_class"]: sample.value
        for family in text_string_to_metric_families(exposition.decode())
        if family.name == "drwatch_backup_rpo_seconds"
        for sample in family.samples
    }
    assert rpo == {"orders": 900.0}  # scratch is transient: no RPO to keep
    assert_promtool_clean(exposition)


async def test_a_wrong_recipient_stops_the_start(
    moto: MotoServer,
    offsite: MotoServer,  # noqa: F811
    gpg_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The public key file holds another key than the configured fingerprint: the
    service refuses to start, and says which keys it found."""
    cfg = backup_config(moto, offsite, gpg_keys, tmp_path)
    wrong = cfg.model_copy(
        update={
            "recipient": cfg.recipient.model_copy(  # type: ignore[union-attr]
                update={"public_key_file": gpg_keys.other.public_file}
            )
        }
    )
    with pytest.raises(BackupError, match=gpg_keys.other.fingerprint):
        async with open_service(wrong, {"orders": 900.0}, tmp_path / "state", sources={}):
            pass


@pytest.mark.parametrize("holder", ["good", "other"])
async def test_the_watchers_private_key_must_be_the_recipients(
    moto: MotoServer,
    offsite: MotoServer,  # noqa: F811
    gpg_keys: Keys,  # noqa: F811
    tmp_path: Path,
    holder: str,
) -> None:
    """The watcher's copy of the private key is checked at start against the recipient:
    another key is refused (restores would fail when needed); the right one starts, and
    the check leaves no gpg-agent behind in drwatch's GNUPGHOME."""
    key_file = export_secret(gpg_keys, getattr(gpg_keys, holder), tmp_path / "watcher.key")
    cfg = backup_config(moto, offsite, gpg_keys, tmp_path, watcher_private_key_file=str(key_file))
    await make_buckets(cfg)
    state = tmp_path / "state"
    if holder == "other":
        with pytest.raises(BackupError, match=f"not of the recipient {gpg_keys.good.fingerprint}"):
            async with open_service(cfg, RPOS, state, sources={}):
                pass
        return
    async with open_service(cfg, RPOS, state, sources={}) as service:
        assert service.doc(0.0)["watcher_holds_private_key"] is True
    assert not list((state / "gnupg").glob("S.gpg-agent*"))
