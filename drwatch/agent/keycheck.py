"""The agent never holds a private key: its config is refused if it names or carries one.

Backups are encrypted on the database host to a public key; the private half stays
offline (and, optionally, on the watcher). A private key pasted into an agent's config,
or a path in it that leads to one, would put it on a watched host: `check` finds both,
armored (`-----BEGIN PGP PRIVATE KEY BLOCK-----`, or any PEM private key) or as binary
OpenPGP secret-key packets, and names the dotted path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_ARMOR = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")
_PGP_ARMOR = re.compile(rb"-----BEGIN PGP PRIVATE KEY BLOCK-----")
_HEAD_BYTES = 64 * 1024
# The agent's own TLS key is a private key it must hold (PEM): there only an OpenPGP
# secret key, which could decrypt backups, is refused.
_TLS_KEY_PATH = "tls_key_file"
_SECRET_KEY_TAG = 5


def check(data: dict[str, Any]) -> list[str]:
    """One problem per value that is, or points at, a private key."""
    problems = []
    for path, key, value in _walk(data, ""):
        if "private_key" in key.lower():
            problems.append(f"{path}: the agent never holds a private key (remove this key)")
        elif isinstance(value, str) and _ARMOR.search(value.encode(errors="replace")):
            problems.append(f"{path}: holds a private key; the agent never holds one")
        elif (
            isinstance(value, str)
            and value.startswith("/")
            and _file_holds_one(Path(value), pgp_only=path == _TLS_KEY_PATH)
        ):
            problems.append(
                f"{path}: {value} holds a private key; the agent never holds one "
                "(backups need only the public key)"
            )
    return problems


def _walk(node: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            yield sub, str(key), value
            yield from _walk(value, sub)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield f"{path}[{i}]", "", value
            yield from _walk(value, f"{path}[{i}]")


def _file_holds_one(path: Path, *, pgp_only: bool = False) -> bool:
    try:
        if not path.is_file():
            return False
        with path.open("rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError:
        return False
    armor = _PGP_ARMOR if pgp_only else _ARMOR
    return bool(armor.search(head)) or _secret_key_packet(head)


def _secret_key_packet(head: bytes) -> bool:
    """Whether `head` opens with an OpenPGP Secret-Key packet (tag 5), version 4 to 6."""
    if len(head) < 3 or not head[0] & 0x80:
        return False
    if head[0] & 0x40:  # new format
        if head[0] & 0x3F != _SECRET_KEY_TAG:
            return False
        first = head[1]
        at = 2 if first < 192 else 3 if first < 224 else 6 if first == 255 else -1
    else:
        if (head[0] >> 2) & 0x0F != _SECRET_KEY_TAG:
            return False
        at = {0: 2, 1: 3, 2: 5}.get(head[0] & 0x03, -1)
    return 0 < at < len(head) and head[at] in (4, 5, 6)
