"""Real parts for the backup tests: throwaway OpenPGP keys made by gpg, and a second
moto server playing the off-site provider (two processes are independent backends)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
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
