"""The sandbox's backups: a key pair generated at start, buckets in both regions and at a
second provider (another moto server behind its own front), the daemon's `[backup]`
section, and what each simulated host's agent uploads with.

The key's private half is written for the operator (`STATE/backup/operator-private.asc`,
mode 600) and is NOT given to the watcher unless `Options.watcher_key` is set: then a
copy goes to `STATE/backup/watcher-private.asc` and the config names it. The hosts get
the public key and their own credentials file, as a real host gets write-only keys.

The data classes are a contract (DESIGN.md): `orders` (persistent: the db groups),
`app-config` (configuration: the app and LB groups), `images` (fixed: every group),
`scratch` (transient). Schedules are short so a drill sees several cycles.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import boto3

from drwatch.agent.backup import UploadSettings
from drwatch.backup.config import MIB, Location
from drwatch.backup.dump import PG_BIN
from drwatch.backup.errors import BackupError
from drwatch.backup.restore_test import restore_test
from drwatch.logs import get_logger
from drwatch.sandbox.cloud import CREDENTIALS, MotoProcess, SandboxError
from drwatch.sandbox.front import Front
from drwatch.sandbox.listener import Gate
from drwatch.sandbox.topology import Topology

log = get_logger(component="sandbox.backups")

OFFSITE = "offsite"
PREFIX = "drwatch"
GPG_TIMEOUT_S = 60.0
# The contract's classes; the groups are the default topology's.
PERSISTENT, CONFIGURATION, FIXED, TRANSIENT = "orders", "app-config", "images", "scratch"
CONFIG_GROUPS = ("app", "web-lb")
ARCHIVED = "etc/app"  # under each simulated host's root


@dataclass(frozen=True)
class KeyPair:
    fingerprint: str
    public_file: Path
    private_file: Path  # the operator's copy


def make_key_pair(root: Path, gpg: str = "gpg") -> KeyPair:
    """An ed25519 key with a cv25519 encryption subkey; its halves exported to files and
    the scratch keyring removed (blocking)."""
    # The scratch keyring lives in a short temporary directory, not under `root`: key
    # generation needs gpg-agent, whose socket path must fit in 108 bytes, and a state
    # directory under pytest's tmp_path on an xdist worker is already longer than that
    # (gpg exits 2, "socket name too long"; found by a full CI run).
    home = Path(tempfile.mkdtemp(prefix="drwatch-keygen-"))
    try:
        base = [gpg, "--homedir", str(home), "--batch", "--pinentry-mode", "loopback"]
        run = _runner(base)
        run("--passphrase", "", "--quick-gen-key", "drwatch sandbox backups", "ed25519", "cert")
        colons = run("--with-colons", "--list-keys").decode()
        fpr = next(ln.split(":")[9] for ln in colons.splitlines() if ln.startswith("fpr"))
        run("--passphrase", "", "--quick-add-key", fpr, "cv25519", "encr")
        public = root / "public.asc"
        public.write_bytes(run("--armor", "--export", fpr))
        private = root / "operator-private.asc"
        private.touch(mode=0o600)
        private.write_bytes(run("--passphrase", "", "--armor", "--export-secret-keys", fpr))
    finally:
        subprocess.run(  # noqa: S603 - fixed argv, no shell
            [shutil.which("gpgconf") or "gpgconf", "--homedir", str(home), "--kill", "all"],
            capture_output=True, check=False, timeout=GPG_TIMEOUT_S,
        )  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)
    return KeyPair(fpr, public, private)


def _runner(base: list[str]) -> Callable[..., bytes]:
    def run(*args: str) -> bytes:
        argv = [*base, *args]
        out = subprocess.run(argv, capture_output=True, check=True, timeout=GPG_TIMEOUT_S)  # noqa: S603
        return out.stdout

    return run


def _bucket(region: str) -> str:
    return f"drwatch-backups-{region}"


class SandboxBackups:
    """The off-site provider, the key pair, the buckets and the config (see module doc)."""

    def __init__(
        self,
        topo: Topology,
        state_dir: Path,
        port: Callable[[], int],
        uplink: Gate,
        session: Callable[[], aiohttp.ClientSession],
        *,
        watcher_key: bool = False,
        rpo: float | None = None,
    ) -> None:
        self.topo = topo
        self.dir = state_dir / "backup"
        self.watcher_key = watcher_key
        self.rpo = rpo  # a drill's objectives.rpo: every class's, schedules within it
        # The cloud's object storage: its own moto process behind its own front (one
        # listener per region), so backup traffic never slows the EC2 API drwatch polls
        # with a one-second timeout; `s3-outage` fails a region's listener here.
        self.storage_moto = MotoProcess(port(), state_dir / "moto-s3.log")
        regions = {r: port() for r in topo.regions}
        self.storage = Front(self.storage_moto.url, regions, uplink, session)
        self.offsite_moto = MotoProcess(port(), state_dir / "moto-offsite.log")
        self.offsite = Front(self.offsite_moto.url, {OFFSITE: port()}, uplink, session)
        self.key: KeyPair | None = None
        self._primary_endpoint = ""

    @property
    def regions(self) -> tuple[str, str | None]:
        regions = self.topo.regions
        return regions[0], regions[1] if len(regions) > 1 else None

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = await asyncio.to_thread(make_key_pair, self.dir)
        if self.watcher_key:
            copy = self.dir / "watcher-private.asc"
            copy.touch(mode=0o600)
            copy.write_bytes(self.key.private_file.read_bytes())
        for name, secret in ((OFFSITE, "offsite-secret"), ("host", "host-write-only")):
            creds = self.dir / f"{name}.credentials"
            creds.touch(mode=0o600)
            creds.write_text(f'access_key_id = "{name}"\nsecret_access_key = "{secret}"\n')
        for moto, front in ((self.storage_moto, self.storage), (self.offsite_moto, self.offsite)):
            await moto.start()
            await front.start()
        home, standby = self.regions
        self._primary_endpoint = self.storage.endpoint(home)
        buckets = [(self.storage_moto.url, home), (self.offsite_moto.url, OFFSITE)]
        if standby:
            buckets.append((self.storage_moto.url, standby))
        await asyncio.to_thread(_make_buckets, buckets)
        log.info("backups.ready", fingerprint=self.key.fingerprint, offsite=self.offsite_moto.url)

    async def stop(self) -> None:
        for moto, front in ((self.storage_moto, self.storage), (self.offsite_moto, self.offsite)):
            await front.stop()
            await moto.stop()

    def config_lines(self) -> list[str]:
        """The daemon's `[objectives.data_classes]` and `[backup]` sections."""
        assert self.key is not None, "start() first"
        home, standby = self.regions
        q = json.dumps
        lines = []
        rpos = {PERSISTENT: 180.0, CONFIGURATION: 300.0, FIXED: 300.0}
        if self.rpo is not None:
            rpos = dict.fromkeys(rpos, self.rpo)
        for name, rpo in rpos.items():
            lines += [f"[objectives.data_classes.{q(name)}]", f"rpo = {rpo:g}", 'rto = "2m"']
        lines += [
            "",
            "[backup]",
            f"custody = {q([f'operator: {self.key.private_file}', 'nowhere else (sandbox)'])}",
            f"chunk_size = {5 * MIB}",
            'reverify_every = "30s"',
        ]
        if self.watcher_key:
            lines.append(f"watcher_private_key_file = {q(str(self.dir / 'watcher-private.asc'))}")
        lines += [
            "[backup.recipient]",
            f"public_key_file = {q(str(self.key.public_file))}",
            f"fingerprint = {q(self.key.fingerprint)}",
            *self._location("primary", home, self.storage.endpoint(home), None),
        ]
        if standby:
            lines += self._location("standby_region", standby, self.storage.endpoint(standby), None)
        creds = self.dir / f"{OFFSITE}.credentials"
        lines += self._location(OFFSITE, OFFSITE, self.offsite.endpoint(OFFSITE), creds)
        groups = list(self.topo.groups())
        db_groups = [g for g, specs in self.topo.groups().items() if specs[0].volume]
        lines += [
            f"[backup.classes.{q(PERSISTENT)}]",
            'kind = "persistent"',
            f"groups = {q(db_groups)}",
            f"snapshot_every = {min(30.0, rpos[PERSISTENT] / 2):g}",
            f"dump_every = {min(60.0, rpos[PERSISTENT]):g}",
            f"[backup.classes.{q(CONFIGURATION)}]",
            'kind = "configuration"',
            f"groups = {q([g for g in CONFIG_GROUPS if g in groups])}",
            f"archive_every = {min(120.0, rpos[CONFIGURATION]):g}",
            f"paths = {q(['/' + ARCHIVED])}",
            f"[backup.classes.{q(FIXED)}]",
            'kind = "fixed"',
            f"groups = {q(groups)}",
            f"[backup.classes.{q(TRANSIENT)}]",
            'kind = "transient"',
            "",
        ]
        return lines

    def corrupt_newest(self, data_class: str) -> Callable[[], None]:
        """Change one byte of the first chunk of the class's newest complete dump (or
        archive) at the primary location, behind drwatch's back (blocking); the function
        that puts the original back."""
        kind = {PERSISTENT: "dump", CONFIGURATION: "config_archive"}.get(data_class)
        if kind is None:
            raise SandboxError(f"{data_class} has no backup objects to corrupt")
        home, _ = self.regions
        url = self.storage_moto.url
        s3: Any = boto3.client("s3", region_name=home, endpoint_url=url, **CREDENTIALS)
        bucket, prefix = _bucket(home), f"{PREFIX}/{data_class}/{kind}/"
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        done = sorted(
            o["Key"].rsplit("/", 1)[0] for o in listed if o["Key"].endswith("/manifest.json")
        )
        if not done:
            raise SandboxError(f"no complete {kind} of {data_class} at the primary location yet")
        key = f"{done[-1]}/chunk-00000.gpg"
        original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        spot = len(original) // 2
        changed = original[:spot] + bytes([original[spot] ^ 0xFF]) + original[spot + 1 :]
        s3.put_object(Bucket=bucket, Key=key, Body=changed)
        log.info("backups.corrupted", key=key, offset=spot)

        def restore() -> None:
            s3.put_object(Bucket=bucket, Key=key, Body=original)

        return restore

    async def restore_test(self, data_class: str) -> str:
        """`drwatch backup restore-test` with the operator's key: the newest dump of the
        class at the off-site provider, decrypted and restored into a scratch PostgreSQL;
        what it restored, in words (SandboxError when nothing was restored)."""
        if self.key is None or data_class != PERSISTENT:
            raise SandboxError(f"{data_class} has no dumps to restore")
        location = Location(
            bucket=_bucket(OFFSITE),
            region="us-east-1",
            endpoint=self.offsite_moto.url,
            credentials_file=self.dir / f"{OFFSITE}.credentials",
            prefix=PREFIX,
        )
        try:
            report = await restore_test(
                "gpg", location, OFFSITE, data_class, self.key.private_file, PG_BIN
            )
        except BackupError as err:
            raise SandboxError(f"restore test failed: {err}") from None
        if report.rows == 0:
            raise SandboxError(f"restore test: {report.backup_id} restored no rows")
        return (
            f"restored {report.backup_id} from {OFFSITE}: {report.rows} rows in "
            f"{report.restore_s:.1f}s, data {report.data_age_s:.0f}s old"
        )

    def _location(self, name: str, region: str, endpoint: str, creds: Path | None) -> list[str]:
        q = json.dumps
        bucket = _bucket(region)
        lines = [
            f"[backup.locations.{name}]",
            f"bucket = {q(bucket)}",
            f"region = {q(region if region != OFFSITE else 'us-east-1')}",
            f"endpoint = {q(endpoint)}",
            f"prefix = {q(PREFIX)}",
        ]
        if creds is not None:
            lines.append(f"credentials_file = {q(str(creds))}")
        return [*lines, f"[backup.locations.{name}.retention]", "keep = 5", 'max_age = "1h"']

    def upload_settings(self) -> UploadSettings | None:
        """What every host's agent uploads with: the primary bucket, its own credentials
        file, the public key. None before start."""
        if self.key is None:
            return None
        home, _ = self.regions
        location = Location(
            bucket=_bucket(home),
            region=home,
            endpoint=self._primary_endpoint,
            credentials_file=self.dir / "host.credentials",
            prefix=PREFIX,
        )
        return UploadSettings(
            location=location,
            public_key_file=self.key.public_file,
            fingerprint=self.key.fingerprint,
            gnupg_home=self.dir / "host-gnupg",
        )


def _make_buckets(where: list[tuple[str, str]]) -> None:
    for url, region in where:
        real = "us-east-1" if region == OFFSITE else region
        s3: Any = boto3.client("s3", region_name=real, endpoint_url=url, **CREDENTIALS)
        extra = (
            {}
            if real == "us-east-1"
            else {"CreateBucketConfiguration": {"LocationConstraint": real}}
        )
        s3.create_bucket(Bucket=_bucket(region), **extra)


async def simulated_dump(host: str, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    """A stand-in for pg_dump on a host without a real database (the default sandbox):
    plaintext rows, so the pipeline, the upload and the checks run on real bytes."""
    row = 0
    sent = 0
    yield f"-- drwatch sandbox: simulated dump of {host}\n".encode()
    while sent < size:
        block = "".join(
            f"{row + i}\t{host}\torder-{(row + i) * 7919 % 100_003}\n" for i in range(512)
        )
        row += 512
        sent += len(block)
        yield block.encode()
