"""A small client of drwatch's JSON API (`/api/v1/...`), for the CLI and for scripts.

It returns the API's JSON as-is and turns transport and HTTP failures into three
errors an operator can act on: the daemon cannot be reached, the token is missing or
wrong, or the API refused the request (with its message).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp

from drwatch.errors import ConfigError, DrwatchError
from drwatch.secretfile import read_secret

DEFAULT_API = "http://127.0.0.1:9480"
AUTH_FILE_ENV = "DRWATCH_API_TOKEN_FILE"


class ApiUnreachableError(DrwatchError):
    """No HTTP answer at all: refused, timed out, name not resolved."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            f"cannot reach drwatch at {url}: {reason} — is `drwatch run` running "
            "(and is --api the address in watcher.listen)?"
        )


class ApiAuthError(DrwatchError):
    """401/403: the request needs the API token, the one given is wrong, or none is set up."""

    def __init__(self, status: int, sent_token: bool, server_message: str = "") -> None:
        self.status = status
        if status == 403 and server_message:
            # The daemon has no token configured: its message says how to set one.
            msg = f"drwatch refused (HTTP 403): {server_message}"
        elif sent_token:
            msg = (
                f"drwatch refused the API token (HTTP {status}): check that --token-file "
                "names the same file as watcher.api_token_file in the daemon's config"
            )
        else:
            msg = (
                f"drwatch needs the API token for this (HTTP {status}): pass --token-file PATH "
                f"(the file named by watcher.api_token_file), or set {AUTH_FILE_ENV}"
            )
        super().__init__(msg)


class ApiRequestError(DrwatchError):
    """The API answered with an error other than authentication (404, 409, 5xx...)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"drwatch answered HTTP {status}: {message}")


def read_token(path: Path | None) -> str | None:
    """The bearer token from `path` (or $DRWATCH_API_TOKEN_FILE); None when neither is set.

    Raises ConfigError when the file cannot be read or is readable by others.
    """
    if path is None:
        env = os.environ.get(AUTH_FILE_ENV, "")
        path = Path(env) if env else None
    if path is None:
        return None
    return read_secret(path).decode()


def _error_message(body: Any, fallback: str) -> str:
    if isinstance(body, dict):
        for key in ("error", "message", "detail", "reason"):
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key])
    return fallback


class ApiClient:
    """One drwatch daemon's API. Every call has a deadline (`timeout` seconds)."""

    def __init__(
        self,
        base_url: str = DEFAULT_API,
        token: str | None = None,
        timeout: float = 10.0,
        by: str = "",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        # Who acts, for the daemon's record of approvals and pauses (1-64 characters).
        self._body = {"by": by[:64]} if by else {}

    async def status(self) -> Any:
        return await self._call("GET", "/api/v1/status")

    async def drills(self, limit: int = 1000) -> Any:
        return await self._call("GET", f"/api/v1/drills?limit={int(limit)}")

    async def incidents(self) -> Any:
        return await self._call("GET", "/api/v1/incidents")

    async def incident(self, incident_id: str) -> Any:
        return await self._call("GET", f"/api/v1/incidents/{_segment(incident_id)}")

    async def backups(self) -> Any:
        return await self._call("GET", "/api/v1/backups")

    async def approve(self, incident_id: str) -> Any:
        return await self._call(
            "POST", f"/api/v1/incidents/{_segment(incident_id)}/approve", self._body
        )

    async def pause(self) -> Any:
        return await self._call("POST", "/api/v1/pause", self._body)

    async def resume(self) -> Any:
        return await self._call("POST", "/api/v1/resume", self._body)

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            async with asyncio.timeout(self._timeout), aiohttp.ClientSession() as session:
                return await self._send(session, method, path, body, headers)
        except TimeoutError:
            raise ApiUnreachableError(
                self.base_url, f"no answer within {self._timeout:g}s"
            ) from None
        except aiohttp.ClientConnectorError as err:
            raise ApiUnreachableError(self.base_url, _reason(err)) from None
        except aiohttp.ClientError as err:
            raise ApiUnreachableError(self.base_url, type(err).__name__) from None

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        body: Any,
        headers: dict[str, str],
    ) -> Any:
        async with session.request(
            method, self.base_url + path, json=body, headers=headers
        ) as resp:
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = None
            if resp.status in (401, 403):
                message = _error_message(data, "")
                raise ApiAuthError(resp.status, bool(self._token), message)
            if resp.status >= 400:
                raise ApiRequestError(resp.status, _error_message(data, resp.reason or ""))
            return data


def _segment(value: str) -> str:
    # An id is one path segment: refuse anything that would change the path.
    if not value or "/" in value or value in (".", ".."):
        raise ConfigError([f"{value!r} is not an incident id"])
    return value


def _reason(err: aiohttp.ClientConnectorError) -> str:
    os_err = err.os_error
    if isinstance(os_err, ConnectionRefusedError):
        return "connection refused"
    return os_err.strerror or str(os_err) if os_err else str(err)
