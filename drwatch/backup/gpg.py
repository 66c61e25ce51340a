"""gpg, the only thing that sees plaintext: the recipient's key checked, then encryption.

`Recipient.load` reads the configured public key file with `gpg --show-keys` and
refuses, before anything is uploaded, a missing gpg, a file holding another key than
the configured fingerprint, and a key with no usable encryption subkey (expired or
revoked). `Recipient.encrypt_argv` is the command line the pipeline runs: public key
only (`--recipient-file`: no keyring, no trust database, no agent), `--batch
--trust-model always`, and gpg's compression set on purpose (see BackupConfig).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from drwatch.backup.errors import BackupError
from drwatch.backup.proc import communicate

_SHOW_TIMEOUT = 20.0
# gpg writes nothing to disk with these (and --trust-model always): no keyring, no
# lock files, no random seed file. On a database host with a full disk the dump's
# encryption still succeeds; without them gpg encrypts everything, then exits 2 on the
# seed file it cannot write (measured on a full tmpfs).
NO_DISK = ("--no-keyring", "--lock-never", "--no-random-seed-file")
_COMPRESS_ALGO = {"none": "none", "zip": "zip", "zlib": "zlib", "bzip2": "bzip2"}


@dataclass(frozen=True)
class Recipient:
    """A checked public key: its fingerprint and the key ids its ciphertext names."""

    gpg: str
    public_key_file: Path
    fingerprint: str
    # Key ids (16 hex digits) of the usable encryption (sub)keys: what a PKESK names.
    key_ids: frozenset[str]
    homedir: Path

    @classmethod
    async def load(
        cls, gpg: str, public_key_file: Path, fingerprint: str, homedir: Path, *, now: float
    ) -> Recipient:
        """The recipient, or BackupError saying what is wrong with gpg or the key."""
        binary = shutil.which(gpg)
        if binary is None:
            raise BackupError(f"gpg ({gpg}) is not installed or not on PATH (Debian: gnupg)")
        out = await _show_keys(binary, public_key_file, homedir)
        keys = _parse_colons(out, now)
        if not keys:
            raise BackupError(f"{public_key_file}: holds no OpenPGP public key")
        fingerprint = fingerprint.upper()
        if fingerprint not in keys:
            raise BackupError(
                f"{public_key_file}: holds key {', '.join(sorted(keys))}, not the configured "
                f"recipient {fingerprint}"
            )
        if len(keys) > 1:
            raise BackupError(f"{public_key_file}: holds {len(keys)} keys; keep only the recipient")
        key_ids = keys[fingerprint]
        if not key_ids:
            raise BackupError(
                f"{public_key_file}: key {fingerprint} has no usable encryption key "
                "(expired, revoked or sign-only)"
            )
        return cls(binary, public_key_file, fingerprint, frozenset(key_ids), homedir)

    def encrypt_argv(self, compression: str) -> list[str]:
        return [
            self.gpg,
            "--homedir",
            str(self.homedir),
            "--batch",
            "--no-autostart",
            *NO_DISK,
            "--no-tty",
            "--quiet",
            "--trust-model",
            "always",
            "--compress-algo",
            _COMPRESS_ALGO[compression],
            "--recipient-file",
            str(self.public_key_file),
            "--encrypt",
        ]


async def check_private_key(
    gpg: str, private_key_file: Path, recipient: Recipient, homedir: Path
) -> None:
    """The watcher's private key file must hold the recipient's secret key, or the
    automated restores it is there for would fail when they are needed."""
    out = await _show_keys(gpg, private_key_file, homedir)
    secret: list[str] = []
    last = ""
    for f in (line.split(":") for line in out.splitlines()):
        if f[0] in ("sec", "pub", "ssb", "sub"):
            last = f[0]
        elif f[0] == "fpr" and last == "sec" and len(f) > 9:
            secret.append(f[9].upper())
            last = ""
    if not secret:
        raise BackupError(f"{private_key_file}: holds no private key")
    if recipient.fingerprint not in secret:
        raise BackupError(
            f"{private_key_file}: holds the private key of {', '.join(secret)}, not of the "
            f"recipient {recipient.fingerprint}"
        )


def _prepare(key_file: Path, homedir: Path) -> None:
    if not key_file.is_file():
        raise BackupError(f"{key_file}: key file not found")
    homedir.mkdir(mode=0o700, parents=True, exist_ok=True)


async def _show_keys(gpg: str, public_key_file: Path, homedir: Path) -> str:
    _prepare(public_key_file, homedir)
    argv = [
        gpg,
        "--homedir",
        str(homedir),
        "--batch",
        "--no-autostart",  # showing a secret key would start a gpg-agent otherwise
        *NO_DISK,  # (it still creates an empty trustdb.gpg, once: the first load)
        "--with-colons",
        "--fixed-list-mode",
        "--show-keys",
        str(public_key_file),
    ]
    try:
        code, out, err = await communicate(argv, _SHOW_TIMEOUT)
    except TimeoutError:
        raise BackupError(
            f"gpg --show-keys {public_key_file}: no answer in {_SHOW_TIMEOUT:g}s"
        ) from None
    if code != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise BackupError(f"{public_key_file}: gpg cannot read it ({tail[0]})")
    return out.decode(errors="replace")


def _parse_colons(out: str, now: float) -> dict[str, list[str]]:
    """Primary fingerprint -> key ids of its usable encryption keys (gpg's colon format:
    field 2 validity, 5 key id, 7 expiry, 12 capabilities; `fpr` field 10)."""
    keys: dict[str, list[str]] = {}
    ids: list[str] | None = None
    last: tuple[str, str, bool] | None = None  # record type, key id, usable to encrypt
    for f in (line.split(":") for line in out.splitlines()):
        if f[0] in ("pub", "sub") and len(f) > 11:
            usable = f[1] not in ("r", "e", "i", "d") and not _expired(f[6], now)
            last = (f[0], f[4].upper(), usable and "e" in f[11])
        elif f[0] == "fpr" and last is not None and len(f) > 9:
            if last[0] == "pub":
                ids = keys.setdefault(f[9].upper(), [])
            if last[2] and ids is not None:
                ids.append(last[1])
            last = None
    return keys


def _expired(field: str, now: float) -> bool:
    return bool(field) and field.isdigit() and int(field) <= now


def scratch_homedir(parent: Path | None = None) -> Path:
    """A private GNUPGHOME for drwatch's gpg runs (nothing is imported into it)."""
    path = Path(tempfile.mkdtemp(prefix="drwatch-gnupg-", dir=parent))
    os.chmod(path, 0o700)
    return path
