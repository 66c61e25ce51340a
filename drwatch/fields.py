"""Field types shared by the daemon's, the agent's and the backups' configs, and the
one parser of `host:port` that every address goes through.

Neutral ground: the daemon and the agent both import this; it imports only other
neutral modules (units) and pydantic.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

from drwatch.units import parse_duration

# A duration: "500ms", "30s", "5m", "2h", "1d" or seconds (drwatch.units.parse_duration).
Duration = Annotated[float, BeforeValidator(parse_duration)]


def split_host_port(value: str) -> tuple[str, int]:
    """`host:port` or `[ipv6]:port` -> (host, port), the host without brackets, ready for
    a connect or a bind. Raises ValueError naming the value: no port, a port out of
    range, an empty host, or an IPv6 address without brackets (`::1:80` is ambiguous)."""
    if value.startswith("["):
        inside, sep, rest = value[1:].partition("]")
        host, port = (inside, rest[1:]) if sep and rest.startswith(":") else ("", "")
    else:
        host, _, port = value.rpartition(":")
        if ":" in host:
            raise ValueError(f"{value!r}: an IPv6 address needs brackets, as in '[::1]:9480'")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port (e.g. '127.0.0.1:9480' or '[::1]:9480')")
    return host, int(port)


def split_host_optional_port(value: str) -> tuple[str, int | None]:
    """As `split_host_port`, with the port optional (a Host header, a name in a list):
    `host`, `[ipv6]` and a bare IPv6 address (a whole address: there is no port to
    mistake) give (host, None). Raises ValueError naming the value, as that one does."""
    bracketed = value.startswith("[")
    if bracketed and value.endswith("]") and len(value) > 2:
        return value[1:-1], None
    if value and not bracketed and (":" not in value or is_ip_address(value)):
        return value, None
    return split_host_port(value)


def is_ip_address(value: str) -> bool:
    """Is `value` an IPv4 or IPv6 address (no brackets, no port)?"""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _check_host_port(value: str) -> str:
    split_host_port(value)
    return value


# A `host:port` setting, checked at load (kept as written: split it with split_host_port).
HostPort = Annotated[str, AfterValidator(_check_host_port)]
