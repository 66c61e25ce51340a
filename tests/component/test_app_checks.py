"""HTTP/TCP probes and the app/canary observers against real aiohttp servers on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from drwatch.config import (
    AppCheck,
    Canary,
    CheckKind,
    GroupConfig,
    JsonCondition,
    LayerTiming,
    Selector,
)
from drwatch.model.fleet import Fleet, Instance, Role
from drwatch.model.observation import Health, Layer
from drwatch.observe.app import AppObserver
from drwatch.observe.canary import CanaryObserver
from drwatch.probes import HttpConditions, HttpProbe, TcpProbe, new_session
from tests.support.services import refused_port, start_site

TIMING = LayerTiming(interval=5.0, timeout=2.0)


@dataclass
class Target:
    """A loopback HTTP server; `peers` collects the client ports that connected."""

    port: int
    peers: set[int] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _app(target: Target) -> web.Application:
    async def track(request: web.Request) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            target.peers.add(peer[1])

    async def ok(request: web.Request) -> web.Response:
        await track(request)
        return web.Response(text="all ok")

    async def fail(_: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"status": request.query.get("s", "ok"), "db": {"lag": 0}})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query["d"]))
        return web.Response(text="ok")

    async def hang(_: web.Request) -> web.Response:
        await target.release.wait()
        return web.Response(text="late")

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * 200_000)

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    app = web.Application()
    for path, handler in [
        ("/ok", ok),
        ("/fail", fail),
        ("/status", status),
        ("/slow", slow),
        ("/hang", hang),
        ("/big", big),
        ("/redirect", redirect),
    ]:
        app.router.add_get(path, handler)
    return app


async def _serve(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    return runner, await start_site(runner, ssl_context)


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    holder = Target(port=0)
    runner, holder.port = await _serve(_app(holder))
    yield holder
    holder.release.set()
    await runner.cleanup()


@pytest.fixture
async def probe() -> AsyncIterator[HttpProbe]:
    session = new_session(limit=50)
    yield HttpProbe(session, max_body_bytes=64 * 1024)
    await session.close()


async def test_status_ok_and_failed(target: Target, probe: HttpProbe) -> None:
    """200 is UP with a latency; 500 is DOWN, saying what it got and wanted."""
    up = await probe.check(target.url("/ok"), HttpConditions(), 2.0)
    down = await probe.check(target.url("/fail"), HttpConditions(), 2.0)
    assert (up.health, up.status) == (Health.UP, 200)
    assert up.latency_s is not None
    assert (down.health, down.reason) == (Health.DOWN, "status 500, want 200")


async def test_redirect_is_not_followed(target: Target, probe: HttpProbe) -> None:
    """A health endpoint that redirects fails the status condition instead of being chased."""
    got = await probe.check(target.url("/redirect"), HttpConditions(), 2.0)
    assert (got.health, got.reason) == (Health.DOWN, "status 302, want 200")


async def test_body_condition(target: Target, probe: HttpProbe) -> None:
    """A body that lacks the expected text is DOWN; one that has it is UP."""
    bad = await probe.check(target.url("/ok"), HttpConditions(body_contains="healthy"), 2.0)
    good = await probe.check(target.url("/ok"), HttpConditions(body_contains="ok"), 2.0)
    assert (bad.health, bad.reason) == (Health.DOWN, "body lacks 'healthy'")
    assert good.health is Health.UP


async def test_json_condition(target: Target, probe: HttpProbe) -> None:
    """A JSON field by dotted path must equal the configured value."""
    cond = HttpConditions(json_path="status", json_equals="ok")
    bad = await probe.check(target.url("/status?s=bad"), cond, 2.0)
    good = await probe.check(target.url("/status"), cond, 2.0)
    nested = await probe.check(
        target.url("/status"), HttpConditions(json_path="db.lag", json_equals=0), 2.0
    )
    assert (bad.health, bad.reason) == (Health.DOWN, "json status='bad', want 'ok'")
    assert good.health is Health.UP
    assert nested.health is Health.UP


async def test_latency_condition(target: Target, probe: HttpProbe) -> None:
    """An answer slower than max_latency is DOWN with the measured and allowed latency."""
    got = await probe.check(target.url("/slow?d=0.2"), HttpConditions(max_latency=0.05), 2.0)
    assert got.health is Health.DOWN
    assert got.reason.startswith("latency ")
    assert got.reason.endswith(" > 0.05s")


async def test_timeout_is_unknown(target: Target, probe: HttpProbe) -> None:
    """No answer within the deadline is UNKNOWN, not DOWN: we failed to see the target."""
    got = await probe.check(target.url("/hang"), HttpConditions(), 0.1)
    assert (got.health, got.reason) == (Health.UNKNOWN, "timeout after 0.1s")


async def test_timeout_leaves_the_task_uncancelled(target: Target, probe: HttpProbe) -> None:
    """The probe takes back its own cancel request: an enclosing deadline still works after."""
    got = await probe.check(target.url("/hang"), HttpConditions(), 0.05)
    task = asyncio.current_task()
    assert task is not None
    assert (got.reason, task.cancelling()) == ("timeout after 0.05s", 0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await asyncio.sleep(1)


async def test_cancel_from_outside_is_not_a_timeout(target: Target, probe: HttpProbe) -> None:
    """Cancelling a check in flight cancels it; it does not come back as an UNKNOWN result."""
    check = asyncio.create_task(probe.check(target.url("/hang"), HttpConditions(), 5.0))
    await asyncio.sleep(0.05)
    check.cancel()
    with pytest.raises(asyncio.CancelledError):
        await check


async def test_outer_deadline_first_is_the_outer_timeout(target: Target, probe: HttpProbe) -> None:
    """An enclosing deadline shorter than the probe's raises at the enclosing level."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await probe.check(target.url("/hang"), HttpConditions(), 5.0)


async def test_refused_is_down(probe: HttpProbe) -> None:
    """A refused connection is DOWN: the host answered that nothing listens."""
    with refused_port() as port:
        got = await probe.check(f"http://127.0.0.1:{port}/", HttpConditions(), 2.0)
    assert (got.health, got.reason) == (Health.DOWN, "connection refused")


async def test_body_is_capped(target: Target, probe: HttpProbe) -> None:
    """A body over the cap is not read whole: body conditions fail on it; status-only passes."""
    status_only = await probe.check(target.url("/big"), HttpConditions(), 2.0)
    with_body = await probe.check(target.url("/big"), HttpConditions(body_contains="x"), 2.0)
    assert status_only.health is Health.UP
    assert (with_body.health, with_body.reason) == (Health.DOWN, "body over 65536 bytes")


async def test_keep_alive_reuses_one_connection(target: Target, probe: HttpProbe) -> None:
    """Checks one after another reuse one kept-alive connection."""
    for _ in range(5):
        assert (await probe.check(target.url("/ok"), HttpConditions(), 2.0)).health is Health.UP
    assert len(target.peers) == 1


def _self_signed(tmp: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return ctx


async def test_https_insecure_tls(tmp_path: Path, probe: HttpProbe) -> None:
    """A self-signed endpoint is UP with insecure_tls and DOWN (certificate refused) without."""
    runner, port = await _serve(_app(Target(port=0)), _self_signed(tmp_path))
    try:
        url = f"https://127.0.0.1:{port}/ok"
        lax = await probe.check(url, HttpConditions(insecure_tls=True), 2.0)
        strict = await probe.check(url, HttpConditions(), 2.0)
    finally:
        await runner.cleanup()
    assert lax.health is Health.UP
    assert (strict.health, strict.reason) == (Health.DOWN, "tls: certificate not accepted")


async def test_tcp_probe(target: Target) -> None:
    """A listening port is UP; a closed one is DOWN (refused)."""
    tcp = TcpProbe()
    assert (await tcp.check("127.0.0.1", target.port, 2.0)).health is Health.UP
    with refused_port() as port:
        closed = await tcp.check("127.0.0.1", port, 2.0)
    assert (closed.health, closed.reason) == (Health.DOWN, "connection refused")


def _instance(iid: str, port: int | None, ip: str | None = None) -> Instance:
    tags = (("drwatch:app-addr", f"127.0.0.1:{port}"),) if port else ()
    return Instance(
        id=iid,
        name=iid,
        region="us-east-1",
        zone="us-east-1a",
        role=Role.APP_SERVER,
        group="app",
        private_ip=ip,
        tags=tags,
    )


def _group(checks: list[AppCheck]) -> GroupConfig:
    return GroupConfig(
        name="app", role=Role.APP_SERVER, select=Selector(tags={"role": "app"}), checks=checks
    )


async def test_app_observer_worst_check_wins(target: Target, probe: HttpProbe) -> None:
    """Several checks of one instance make one APP observation; the worst wins and names
    the failing check. The app-addr tag overrides host and port."""
    checks = [
        AppCheck(name="health", port=1, path="/ok", body_contains="ok"),
        AppCheck(
            name="deep",
            port=1,
            path="/status",
            json_field=JsonCondition(path="status", equals="ok"),
        ),
        AppCheck(name="db", port=1, path="/fail"),
    ]
    observer = AppObserver([_group(checks)], TIMING, probe, TcpProbe())
    jobs = observer.jobs_for(Fleet((_instance("i-1", target.port),)))
    assert set(jobs) == {"app:i-1"}
    obs = await jobs["app:i-1"].run()
    assert (obs.target, obs.layer, obs.health) == ("i-1", Layer.APP, Health.DOWN)
    assert obs.reason == "db: status 500, want 200"
    assert obs.ok_at is None


async def test_app_observer_uses_private_ip_and_check_port(
    target: Target, probe: HttpProbe
) -> None:
    """Without the tag, the check goes to the instance's private ip and the check's port;
    an instance with no address at all is UNKNOWN."""
    group = _group([AppCheck(port=target.port, path="/ok")])
    observer = AppObserver([group], TIMING, probe, TcpProbe())
    fleet = Fleet((_instance("i-1", None, ip="127.0.0.1"), _instance("i-2", None)))
    jobs = observer.jobs_for(fleet)
    up = await jobs["app:i-1"].run()
    nowhere = await jobs["app:i-2"].run()
    assert (up.health, up.ok_at) == (Health.UP, up.attempted_at)
    assert nowhere.health is Health.UNKNOWN
    assert nowhere.reason.startswith("no address")


async def test_service_job_per_load_balancer(target: Target, probe: HttpProbe) -> None:
    """A load-balancer group with a service_url gets one SERVICE job keyed by the group."""
    lb = GroupConfig(
        name="web",
        role=Role.LOAD_BALANCER,
        select=Selector(tags={"role": "lb"}),
        service_url=target.url("/fail"),
    )
    observer = AppObserver([lb], TIMING, probe, TcpProbe())
    jobs = observer.jobs_for(Fleet())
    obs = await jobs["service:web"].run()
    assert (obs.target, obs.layer, obs.health) == ("web", Layer.SERVICE, Health.DOWN)


async def test_canaries(target: Target, probe: HttpProbe) -> None:
    """A URL canary is UP on any answer (even a 500: the path works); a TCP canary that is
    refused is DOWN."""
    with refused_port() as port:
        canaries = [
            Canary(name="web", url=target.url("/fail")),
            Canary(name="dns", tcp=f"127.0.0.1:{port}"),
        ]
        jobs = CanaryObserver(canaries, TIMING, probe, TcpProbe()).jobs_for(Fleet())
        web_obs = await jobs["canary:web"].run()
        tcp_obs = await jobs["canary:dns"].run()
    assert (web_obs.layer, web_obs.health) == (Layer.CANARY, Health.UP)
    assert (tcp_obs.target, tcp_obs.health) == ("dns", Health.DOWN)


async def test_app_observer_tcp_check(target: Target, probe: HttpProbe) -> None:
    """A tcp check is UP when the port accepts and DOWN (refused) when nothing listens."""
    group = _group([AppCheck(name="port", kind=CheckKind.TCP, port=1)])
    observer = AppObserver([group], TIMING, probe, TcpProbe())
    with refused_port() as port:
        fleet = Fleet((_instance("i-1", target.port), _instance("i-2", port)))
        jobs = observer.jobs_for(fleet)
        up = await jobs["app:i-1"].run()
        down = await jobs["app:i-2"].run()
    assert up.health is Health.UP
    assert (down.health, down.reason) == (Health.DOWN, "connection refused")
