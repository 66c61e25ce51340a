"""The fault-injecting front: a reverse proxy between drwatch and a stock moto.

One listener per region (drwatch's `provider.endpoints` point at them), so a region's
API can be refused on its own. Requests are forwarded unchanged; the front rewrites
what moto cannot simulate (NOTES.md): zone state, status checks, errors, timeouts,
throttling and launches refused for lack of capacity.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

from drwatch.logs import get_logger
from drwatch.sandbox.listener import Gate, Listener, gate_middleware

log = get_logger(component="sandbox.front")

EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15"
_HOP_HEADERS = frozenset(
    {"host", "content-length", "connection", "transfer-encoding", "keep-alive", "content-encoding"}
)
MOTO_TIMEOUT_S = 30.0


@dataclass
class FrontFaults:
    """What the front currently breaks. Zones and instance ids, regions by name."""

    api_outage: set[str] = field(default_factory=set)
    credentials_refused: set[str] = field(default_factory=set)
    throttled: set[str] = field(default_factory=set)
    impaired_zones: set[str] = field(default_factory=set)
    launch_refused_zones: set[str] = field(default_factory=set)
    impaired_instances: set[str] = field(default_factory=set)
    s3_outage: set[str] = field(default_factory=set)  # regions whose object storage fails


def ec2_error(code: str, message: str, status: int) -> web.Response:
    """An error in EC2's query-protocol XML shape, which botocore parses into ClientError."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        f"</Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
    )
    return web.Response(status=status, text=body, content_type="text/xml")


def rest_error(code: str, message: str, status: int) -> web.Response:
    """The REST-XML error shape (Route 53)."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
        f"<Message>{message}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )
    return web.Response(status=status, text=body, content_type="text/xml")


def s3_error(code: str, message: str, status: int) -> web.Response:
    """S3's REST error shape."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{uuid.uuid4()}</RequestId></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


class Front:
    """The per-region listeners and the fault state they consult."""

    def __init__(
        self,
        moto_url: str,
        ports: dict[str, int],
        uplink: Gate,
        session: Callable[[], aiohttp.ClientSession],
    ) -> None:
        self.moto_url = moto_url
        self.faults = FrontFaults()
        self._uplink = uplink
        self._session = session
        self.listeners = {
            region: Listener(port, self._factory(region)) for region, port in ports.items()
        }

    def endpoint(self, region: str) -> str:
        return f"http://{self.listeners[region].address}"

    async def start(self) -> None:
        for listener in self.listeners.values():
            await listener.start()

    async def stop(self) -> None:
        for listener in self.listeners.values():
            await listener.stop()

    async def set_region_reachable(self, region: str, reachable: bool) -> None:
        """A region outage refuses connections: the listener closes its port."""
        await self.listeners[region].set_running(reachable)

    def _factory(self, region: str) -> Callable[[], web.Application]:
        def build() -> web.Application:
            app = web.Application(middlewares=[gate_middleware(self._uplink)])

            async def handle(request: web.Request) -> web.StreamResponse:
                return await self._handle(region, request)

            app.router.add_route("*", "/{tail:.*}", handle)
            return app

        return build

    async def _handle(self, region: str, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        action = _action(request, body)
        refusal = self._refusal(region, request.path, action, body)
        if refusal is not None:
            log.debug("front.refuse", region=region, action=action, status=refusal.status)
            return refusal
        status, headers, payload = await self._forward(request, body)
        payload = self._rewrite(action, payload) if status == 200 else payload
        if request.method == "HEAD":  # S3's HeadObject: the size is the answer
            return web.Response(status=status, headers=headers)
        headers.pop("Content-Length", None)
        return web.Response(status=status, body=payload, headers=headers)

    def _refusal(self, region: str, path: str, action: str, body: bytes) -> web.Response | None:
        rest = path.startswith("/2013-04-01/")
        error = rest_error if rest else ec2_error
        if region in self.faults.api_outage:
            return error("ServiceUnavailable", "The service is unavailable.", 503)
        if region in self.faults.s3_outage and not action and not rest:
            return s3_error("ServiceUnavailable", "Please reduce your request rate.", 503)
        if region in self.faults.credentials_refused:
            return error(
                "AuthFailure", "AWS was not able to validate the provided access credentials", 401
            )
        if region in self.faults.throttled:
            code = "Throttling" if rest else "RequestLimitExceeded"
            return error(code, "Request limit exceeded.", 400)
        if action == "RunInstances":
            zone = _launch_zone(region, body)
            if zone in self.faults.launch_refused_zones:
                return ec2_error(
                    "InsufficientInstanceCapacity",
                    f"We currently do not have sufficient capacity in the Availability Zone "
                    f"you requested ({zone}).",
                    500,
                )
        return None

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._session().request(
            request.method,
            f"{self.moto_url}{request.path_qs}",
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=MOTO_TIMEOUT_S),
            auto_decompress=True,
        ) as resp:
            payload = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_HEADERS}
            if request.method == "HEAD" and "Content-Length" in resp.headers:
                out["Content-Length"] = resp.headers["Content-Length"]
            return resp.status, out, payload

    def _rewrite(self, action: str, payload: bytes) -> bytes:
        if action == "DescribeAvailabilityZones" and self.faults.impaired_zones:
            return _rewrite_xml(payload, self._zone_states)
        if action == "DescribeInstanceStatus" and (
            self.faults.impaired_instances or self.faults.impaired_zones
        ):
            return _rewrite_xml(payload, self._instance_statuses)
        return payload

    def _zone_states(self, root: ET.Element) -> None:
        for item in root.iter(f"{{{EC2_NS}}}item"):
            name = item.findtext(f"{{{EC2_NS}}}zoneName")
            state = item.find(f"{{{EC2_NS}}}zoneState")
            if name in self.faults.impaired_zones and state is not None:
                state.text = "impaired"

    def _instance_statuses(self, root: ET.Element) -> None:
        status_set = root.find(f"{{{EC2_NS}}}instanceStatusSet")
        for item in status_set if status_set is not None else []:
            instance = item.findtext(f"{{{EC2_NS}}}instanceId")
            zone = item.findtext(f"{{{EC2_NS}}}availabilityZone")
            if instance in self.faults.impaired_instances or zone in self.faults.impaired_zones:
                for part in ("instanceStatus", "systemStatus"):
                    _impair(item.find(f"{{{EC2_NS}}}{part}"))


def _impair(status: ET.Element | None) -> None:
    if status is None:
        return
    for node in status.iter(f"{{{EC2_NS}}}status"):
        node.text = "failed"
    top = status.find(f"{{{EC2_NS}}}status")
    if top is not None:
        top.text = "impaired"


def _rewrite_xml(payload: bytes, edit: Callable[[ET.Element], None]) -> bytes:
    root = ET.fromstring(payload)  # noqa: S314 - moto's own answer, on loopback
    edit(root)
    text = ET.tostring(root, encoding="unicode", default_namespace=EC2_NS)
    return ('<?xml version="1.0" encoding="utf-8"?>\n' + text).encode()


def _params(request: web.Request, body: bytes) -> dict[str, list[str]]:
    params = parse_qs(request.query_string)
    if request.content_type == "application/x-www-form-urlencoded" or body.startswith(b"Action="):
        params.update(parse_qs(body.decode("utf-8", "replace")))
    return params


def _action(request: web.Request, body: bytes) -> str:
    return _params(request, body).get("Action", [""])[0]


def _launch_zone(region: str, body: bytes) -> str:
    """Where RunInstances would place the instance; moto's default is the region's 'a'."""
    params = parse_qs(body.decode("utf-8", "replace"))
    zone = params.get("Placement.AvailabilityZone", [""])[0]
    return zone or f"{region}a"
