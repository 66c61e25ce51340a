"""Real parts for the backup tests: throwaway OpenPGP keys made by gpg, and a second
moto server playing the off-site provider (two processes are independent backends)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import MotoServer
from tests.support.services import free_port, need_binary, process, wait_http


@dataclass(frozen=True)
class TestKey:
    """A key pair: the public half exported to a file, the secret half left in `home`."""

    fingerprint: str
    public_file: Path
    home: Path


@dataclass(frozen=True)
class Keys:
    gpg: str
    good: TestKey
    other: TestKey
    expired: TestKey
    signing_only: TestKey


def _gpg(gpg: str, home: Path, *args: str) -> str:
    out = subprocess.run(
        [gpg, "--homedir", str(home), "--batch", "--passphrase", "", *args],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return out.stdout.decode()


def make_key(
    gpg: str, root: Path, name: str, *, expire: str = "never", at: str | None = None
) -> TestKey:
    """An ed25519 key with a cv25519 encryption subkey (`at`: a faked creation time)."""
    home = root / name
    home.mkdir(mode=0o700)
    faked = ["--faked-system-time", at] if at else []
    _gpg(
        gpg,
        home,
        *faked,
        "--quick-gen-key",
        f"{name} <{name}@example.org>",
        "ed25519",
        "cert",
        expire,
    )
    listing = _gpg(gpg, home, "--with-colons", "--list-keys")
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
    if name != "signing-only":
        _gpg(gpg, home, *faked, "--quick-add-key", fpr, "cv25519", "encr", expire)
    public = root / f"{name}.pub.gpg"
    public.write_bytes(
        subprocess.run(
            [gpg, "--homedir", str(home), "--batch", "--export", fpr],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    )
    return TestKey(fingerprint=fpr, public_file=public, home=home)


@pytest.fixture(scope="session")
def gpg_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    gpg = need_binary("gpg")
    root = tmp_path_factory.mktemp("gpg-keys")
    keys = Keys(
        gpg=gpg,
        good=make_key(gpg, root, "good"),
        other=make_key(gpg, root, "other"),
        expired=make_key(gpg, root, "expired", expire="1d", at="20200101T000000"),
        signing_only=make_key(gpg, root, "signing-only"),
    )
    yield keys
    for key in (keys.good, keys.other, keys.expired, keys.signing_only):
        subprocess.run(
            ["gpgconf", "--homedir", str(key.home), "--kill", "all"],
            capture_output=True,
            check=False,
            timeout=30,
        )


def decrypt(keys: Keys, key: TestKey, ciphertext: bytes) -> bytes:
    """Decrypt with the key's secret half (what an operator's offline machine does)."""
    return subprocess.run(
        [keys.gpg, "--homedir", str(key.home), "--batch", "--quiet", "--decrypt"],
        input=ciphertext,
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout


@pytest.fixture(scope="session")
def offsite_session() -> Iterator[MotoServer]:
    """A second moto_server: the off-site provider, its own process and state."""
    binary = need_binary("moto_server", str(Path(sys.executable).parent))
    port = free_port()
    with process([binary, "-H", "127.0.0.1", "-p", str(port)]):
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/moto-api/")
        yield MotoServer(url=url, port=port)


@pytest.fixture
def offsite(offsite_session: MotoServer) -> MotoServer:
    offsite_session.reset()
    return offsite_session


PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass(frozen=True)
class PgPair:
    """A PostgreSQL 15 primary and its streaming replica on loopback."""

    primary_port: int
    replica_port: int
    root: Path

    def psql(self, port: int, sql: str, db: str = "postgres") -> str:
        out = subprocess.run(
            [
                str(PG_BIN / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "-X",
                "-At",
                "-d",
                db,
                "-c",
                sql,
            ],
            capture_output=True,
            check=True,
            timeout=30,
        )
        return out.stdout.decode().strip()


def _as_postgres(argv: list[str]) -> None:
    subprocess.run(
        argv,
        user="postgres",
        group="postgres",
        extra_groups=[],
        capture_output=True,
        check=True,
        timeout=120,
    )


@contextmanager
def _postgres(data: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [
            str(PG_BIN / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ],
        user="postgres",
        group="postgres",
        extra_groups=[],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        proc.terminate()  # smart shutdown; fast enough with no clients left
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_query(pair: PgPair, port: int, sql: str, want: str, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < end:
        try:
            last = pair.psql(port, sql)
            if last == want:
                return
        except subprocess.CalledProcessError as err:
            last = err.stderr.decode(errors="replace").strip()
        time.sleep(0.1)
    raise TimeoutError(f"port {port}: {sql!r} gave {last!r}, not {want!r}, in {deadline_s}s")


@pytest.fixture(scope="module")
def pg_pair() -> Iterator[PgPair]:
    """initdb, a primary with an `orders` table of 5,000 rows, and a replica made by
    pg_basebackup -R that has replayed them. Owned by the postgres user, as it must be."""
    need_binary("initdb", str(PG_BIN))
    root = Path(tempfile.mkdtemp(prefix="drwatch-pg-"))
    shutil.chown(root, "postgres", "postgres")
    pair = PgPair(free_port(), free_port(), root)
    _as_postgres(
        [
            str(PG_BIN / "initdb"),
            "-D",
            str(root / "p"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--data-checksums",
        ]
    )
    try:
        with _postgres(root / "p", pair.primary_port):
            _wait_query(pair, pair.primary_port, "SELECT 1", "1")
            pair.psql(
                pair.primary_port,
                "CREATE TABLE orders (id serial PRIMARY KEY, note text);"
                " INSERT INTO orders (note) SELECT md5(i::text) FROM generate_series(1, 5000) i",
            )
            _as_postgres(
                [
                    str(PG_BIN / "pg_basebackup"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(pair.primary_port),
                    "-U",
                    "postgres",
                    "-D",
                    str(root / "r"),
                    "-R",
                    "-X",
                    "stream",
                ]
            )
            with _postgres(root / "r", pair.replica_port):
                _wait_query(pair, pair.replica_port, "SELECT count(*) FROM orders", "5000")
                yield pair
    finally:
        shutil.rmtree(root, ignore_errors=True)


def export_secret(keys: Keys, key: TestKey, path: Path) -> Path:
    """The key's secret half in a file only its owner reads (the watcher's copy)."""
    out = subprocess.run(
        [
            keys.gpg,
            "--homedir",
            str(key.home),
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--export-secret-keys",
            key.fingerprint,
        ],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    path.write_bytes(out)
    path.chmod(0o600)
    return path
