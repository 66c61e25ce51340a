"""The Host header check: the web app answers only to the names it is known by.

A DNS-rebinding page (evil.example resolving first to its own server, then to
127.0.0.1) runs in an operator's browser and reads `http://evil.example:9480/api/...`:
the browser thinks it talks to evil.example, but the request reaches drwatch with
`Host: evil.example:9480`. Refusing names that are not drwatch's own stops it.

Accepted: a Host that is an IP address (a rebinding needs a DNS name; the browser
sends the name it resolved), `localhost`, the host of `watcher.listen`, the host of
`alerts.external_url`, and any name in `watcher.allowed_hosts`. A request with no Host
header at all (HTTP/1.0 tools) is not a browser's and passes. Everything else gets 421.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from drwatch.config import Config
from drwatch.fields import is_ip_address, split_host_optional_port, split_host_port
from drwatch.logs import get_logger

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _name_of(host: str) -> str | None:
    """The host name of a Host header or a configured name (the port optional), lower
    case, without the port or a final dot; None when it is not `host[:port]`."""
    try:
        name, _ = split_host_optional_port(host.strip().lower())
    except ValueError:
        return None
    return name.rstrip(".")


class AllowedHosts:
    """The names a Host header may carry (IP addresses always pass)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset({"localhost", *filter(None, map(_name_of, names))})

    @classmethod
    def from_config(cls, cfg: Config) -> AllowedHosts:
        names = [split_host_port(cfg.watcher.listen)[0], *cfg.watcher.allowed_hosts]
        if cfg.alerts.external_url:
            names.append(urlsplit(cfg.alerts.external_url).hostname or "")
        return cls(names)

    def allows(self, host_header: str | None) -> bool:
        if host_header is None:
            return True
        name = _name_of(host_header)
        return name is not None and (is_ip_address(name) or name in self.names)


def host_check(allowed: AllowedHosts) -> Middleware:
    """Middleware refusing (421) requests whose Host is not one of `allowed`."""
    log = get_logger(component="web")
    refused: set[str] = set()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if allowed.allows(host):
            return await handler(request)
        name = (_name_of(host or "") or (host or "").strip().lower())[:100]
        if name not in refused and len(refused) < 100:  # log each name once, bounded
            refused.add(name)
            log.warning("web.host_refused", host=name, remote=request.remote)
        # JSON like the API's other errors, so `drwatch status --api URL` shows the hint.
        message = (
            f"drwatch does not answer to the name {name!r}: use its address, or add the "
            "name to watcher.allowed_hosts (this check stops DNS-rebinding pages)"
        )
        return web.json_response({"error": message}, status=421)

    return check
