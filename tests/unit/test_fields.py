"""The one host:port parser every address goes through, and the config field types."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from drwatch.config import AgentClientConfig, AppCheck
from drwatch.fields import Duration, HostPort, split_host_optional_port, split_host_port
from drwatch.model.fleet import Instance, Role
from drwatch.observe.agent import AGENT_ADDR_TAG, agent_address
from drwatch.observe.app import APP_ADDR_TAG, endpoint


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9480", ("127.0.0.1", 9480)),
        ("db-1.internal:5432", ("db-1.internal", 5432)),
        ("[::1]:9180", ("::1", 9180)),  # brackets gone: ready for connect/bind
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
        ("h:1", ("h", 1)),
        ("h:65535", ("h", 65535)),
    ],
)
def test_host_port_splits(value: str, expected: tuple[str, int]) -> None:
    """host:port and [ipv6]:port give the host (no brackets) and the port as an int."""
    assert split_host_port(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "nowhere",  # no port
        ":80",  # no host
        "h:",
        "h:0",
        "h:65536",
        "h:x",
        "h: 80",
        "h:+80",
        "h:\u0663",  # an Arabic-Indic digit: isdigit() says yes, a port it is not
        "[::1]",
        "[::1]80",
        "[]:80",
        "[::1:80",
    ],
)
def test_bad_host_port_is_refused_naming_the_value(value: str) -> None:
    """Anything else raises ValueError that quotes what was given."""
    with pytest.raises(ValueError, match="is not host:port") as err:
        split_host_port(value)
    assert repr(value) in str(err.value)


def test_ipv6_without_brackets_is_refused_with_the_fix() -> None:
    """`::1:80` could be ::1 port 80 or ::1:80 with no port: the message says to bracket it."""
    with pytest.raises(ValueError, match=r"needs brackets, as in '\[::1\]:9480'"):
        split_host_port("::1:80")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("watcher.lan", ("watcher.lan", None)),
        ("watcher.lan:9480", ("watcher.lan", 9480)),
        ("127.0.0.1", ("127.0.0.1", None)),
        ("[::1]", ("::1", None)),
        ("[::1]:9480", ("::1", 9480)),
        ("::1", ("::1", None)),  # a whole IPv6 address: no port to mistake
        ("fe80::1%eth0", ("fe80::1%eth0", None)),
    ],
)
def test_host_with_an_optional_port_splits(value: str, expected: tuple[str, int | None]) -> None:
    """The optional-port form: a host alone gives no port, with one it is as above."""
    assert split_host_optional_port(value) == expected


@pytest.mark.parametrize(
    "value", ["", "[]", "[::1", "[::1]80", ":80", "h:", "h:0", "h:x", "a:b:c", "::1::80"]
)
def test_bad_host_with_an_optional_port_is_refused(value: str) -> None:
    """Malformed values raise ValueError quoting the value, as split_host_port does."""
    with pytest.raises(ValueError, match=r"host:port|brackets") as err:
        split_host_optional_port(value)
    assert repr(value) in str(err.value)


class _Cfg(BaseModel):
    listen: HostPort
    every: Duration = 1.0


def test_config_fields_check_at_load_and_keep_the_text() -> None:
    """HostPort keeps the value as written once checked; Duration reads "90s"."""
    cfg = _Cfg.model_validate({"listen": "[::1]:9480", "every": "90s"})
    assert (cfg.listen, cfg.every) == ("[::1]:9480", 90.0)
    with pytest.raises(ValidationError, match="is not host:port"):
        _Cfg.model_validate({"listen": "localhost"})


def _instance(**tags: str) -> Instance:
    return Instance(
        "i-1",
        "app-1",
        "us-east-1",
        "us-east-1a",
        Role.APP_SERVER,
        "app",
        private_ip="10.0.0.5",
        tags=tuple(tags.items()),
    )


def test_address_tags_go_through_the_same_parser() -> None:
    """The drwatch:app-addr / agent-addr tags: a malformed one is ignored (the instance's
    own address is used); an IPv6 one comes back without its brackets."""
    check = AppCheck(port=8080, path="/healthz")
    assert endpoint(_instance(**{APP_ADDR_TAG: "x:"}), check) == ("10.0.0.5", 8080)
    assert endpoint(_instance(**{APP_ADDR_TAG: "::1:81"}), check) == ("10.0.0.5", 8080)
    assert endpoint(_instance(**{APP_ADDR_TAG: "[::1]:81"}), check) == ("::1", 81)
    cfg = AgentClientConfig(secret_file=Path("/nonexistent/agent.secret"), allow_address_tag=True)
    assert agent_address(_instance(**{AGENT_ADDR_TAG: "[::1]:9180"}), cfg) == ("::1", 9180)
    assert agent_address(_instance(**{AGENT_ADDR_TAG: "h:99999"}), cfg) == ("10.0.0.5", cfg.port)
