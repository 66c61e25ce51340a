"""Which Host headers the web app answers to (the DNS-rebinding guard)."""

from __future__ import annotations

import pytest

from drwatch.config import Config
from drwatch.web.hostcheck import AllowedHosts
from tests.unit.test_config import minimal


def config(**watcher: object) -> Config:
    return Config.model_validate(
        {
            **minimal(),
            "watcher": {
                "listen": "0.0.0.0:9480",
                "api_token_file": "/etc/drwatch/api-token",
                **watcher,
            },
            "alerts": {"external_url": "https://drwatch.example.org/"},
        }
    )


@pytest.mark.parametrize(
    "host",
    [
        None,  # HTTP/1.0 tools send none; browsers always do
        "127.0.0.1:9480",
        "10.0.0.7:9480",
        "[::1]:9480",
        "::1",
        "localhost:9480",
        "LOCALHOST",
        "drwatch.example.org",
        "drwatch.example.org.:443",
        "watcher-1.internal:9480",
    ],
)
def test_own_names_and_addresses_pass(host: str | None) -> None:
    """Addresses (a rebinding needs a name), localhost, the external URL's host and the
    configured extra names are served, whatever the port or case."""
    allowed = AllowedHosts.from_config(config(allowed_hosts=["Watcher-1.internal"]))
    assert allowed.allows(host)


@pytest.mark.parametrize(
    "host",
    [
        "rebind.attacker.example:9480",
        "drwatch.example.org.attacker.example",
        "localhost.attacker.example",
        "127.0.0.1.nip.io:9480",
        "",
        "[::1",
        "[::1]9480",
        "a:b:c",  # neither a name with a port nor an IPv6 address
        "watcher-1.internal:x",
    ],
)
def test_foreign_names_are_refused(host: str) -> None:
    """Any other name, including ones that merely contain an allowed name, is refused."""
    allowed = AllowedHosts.from_config(config(allowed_hosts=["watcher-1.internal"]))
    assert not allowed.allows(host)


def test_a_named_listen_address_is_allowed() -> None:
    """A listen address given as a name is one of the watcher's names."""
    allowed = AllowedHosts.from_config(config(listen="watcher.lan:9480"))
    assert allowed.allows("watcher.lan:9480")
    assert not allowed.allows("other.lan:9480")
