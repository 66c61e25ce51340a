"""An agent's config never carries a private key: pasted, named, or behind a path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from drwatch.agent import config as agent_config
from drwatch.errors import ConfigError

ARMORED = (
    "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQVYBGs...\n-----END PGP PRIVATE KEY BLOCK-----\n"
)
# The first bytes of `gpg --export-secret-keys` (old-format tag 5, version 4) and of
# `gpg --export` (tag 6: a public key, which the agent may hold).
SECRET_HEAD = bytes.fromhex("9458046b0f10e216092b06010401da470f01")
PUBLIC_HEAD = bytes.fromhex("9833046b0f10e216092b06010401da470f01")


def config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    secret = tmp_path / "agent.secret"
    secret.write_text("0123456789abcdef0123456789abcdef")
    return {"secret_file": str(secret), "instance_id": "i-0a1b2c3d4e5f60718", **extra}


def action(argv: list[str]) -> dict[str, Any]:
    return {"actions": [{"name": "dump", "argv": argv}]}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        agent_config.parse(data)
    return err.value.problems


def test_a_pasted_private_key_is_refused(tmp_path: Path) -> None:
    data = config(tmp_path, **action(["/usr/bin/env", ARMORED]))
    assert problems(data) == ["actions[0].argv[1]: holds a private key; the agent never holds one"]


def test_a_private_key_setting_is_refused(tmp_path: Path) -> None:
    found = problems(config(tmp_path, backup_private_key_file="/etc/drwatch/backup.key"))
    assert found == [
        "backup_private_key_file: the agent never holds a private key (remove this key)"
    ]


@pytest.mark.parametrize(
    ("content", "refused"),
    [
        (SECRET_HEAD, True),
        (ARMORED.encode(), True),
        (b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n", True),
        (PUBLIC_HEAD, False),
        (b"#!/bin/sh\npg_dump -Fc orders\n", False),
    ],
    ids=["binary-secret-key", "armored", "ssh-key", "public-key", "script"],
)
def test_a_path_to_a_private_key_is_refused(tmp_path: Path, content: bytes, refused: bool) -> None:
    """A file named in the config is looked into: a private key there is refused, a
    public key or a script is fine."""
    key = tmp_path / "some.file"
    key.write_bytes(content)
    data = config(tmp_path, **action(["/usr/bin/gpg", "--recipient-file", str(key)]))
    if refused:
        assert problems(data) == [
            f"actions[0].argv[2]: {key} holds a private key; the agent never holds one "
            "(backups need only the public key)"
        ]
    else:
        assert agent_config.parse(data).actions[0].argv[2] == str(key)


def test_the_agents_own_tls_key_is_allowed_but_not_an_openpgp_one(tmp_path: Path) -> None:
    """tls_key_file is the agent's own TLS identity (a PEM private key it must hold); an
    OpenPGP secret key there would still let it decrypt backups, and is refused."""
    cert = tmp_path / "agent.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    tls_key = tmp_path / "agent.key"
    tls_key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")
    data = config(tmp_path, tls_cert_file=str(cert), tls_key_file=str(tls_key))
    assert agent_config.parse(data).tls_key_file is not None
    tls_key.write_bytes(SECRET_HEAD)
    assert problems(data) == [
        f"tls_key_file: {tls_key} holds a private key; the agent never holds one "
        "(backups need only the public key)"
    ]
