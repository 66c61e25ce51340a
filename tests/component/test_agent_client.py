"""The daemon's AgentClient against the real agent and against agents that misbehave."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import aiohttp
import pytest
import structlog
from aiohttp import web

from drwatch import logs
from drwatch.act.base import AgentActions
from drwatch.agent.server import create_app, serving
from drwatch.agent.wire import (
    ANSWER_SIGNATURE_HEADER,
    NONCE_HEADER,
    TARGET_HEADER,
    CheckResult,
    Status,
    derive_host_secret,
    encode_facts,
    sign_answer,
)
from drwatch.config import AgentClientConfig, LayerTiming
from drwatch.model.fleet import Fleet, Instance, Role
from drwatch.model.observation import Health, Layer
from drwatch.observe.agent import AgentActionError, AgentClient, AgentObserver, agent_address
from tests.component.test_agent_server import (
    DATABASE,
    SECRET,
    FakeHost,
    FixedCheck,
    RecordingAction,
    agent_cfg,
)
from tests.support.services import free_port

# Imported here, not in a handler: a first import inside a request (hypothesis is heavy)
# once took longer than the 2 s poll deadline on a loaded machine.
from tests.unit.test_agent_wire import sample_facts

CAP = 4096


def client_cfg(**overrides: object) -> AgentClientConfig:
    data: dict[str, object] = {
        "secret_file": "/unused",
        "max_response_bytes": CAP,
        "allow_address_tag": True,
        **overrides,
    }
    return AgentClientConfig.model_validate(data)


def instance_at(port: int, **fields: object) -> Instance:
    tags = (("drwatch:agent-addr", f"127.0.0.1:{port}"),)
    base: dict[str, object] = {
        "id": "i-0db2",
        "name": "db-2",
        "region": "us-east-1",
        "zone": "us-east-1b",
        "role": Role.DATABASE,
        "group": "db",
        "tags": tags,
    }
    return Instance(**{**base, **fields})  # type: ignore[arg-type]


Serve = Callable[[web.Application], Awaitable[int]]


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


@pytest.fixture
async def client(stack: AsyncExitStack) -> AgentClient:
    session = await stack.enter_async_context(aiohttp.ClientSession())
    return AgentClient(client_cfg(), SECRET, session)


@pytest.fixture
def serve(stack: AsyncExitStack) -> Serve:
    """Runs an aiohttp app on a free loopback port until the test ends; returns the port."""

    async def start(app: web.Application) -> int:
        return await stack.enter_async_context(serving(app, "127.0.0.1", 0))

    return start


def real_agent(instance_id: str = "i-0db2", **checks: FixedCheck) -> web.Application:
    actions = {"promote": RecordingAction()}
    return create_app(
        agent_cfg(instance_id=instance_id),
        FakeHost(),
        checks,
        actions,
        secret=SECRET,
        hostname="db-2",
        instance_id=instance_id,
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def sign_answers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Signs whatever the handler answers, as a holder of the key would."""
    response = await handler(request)
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        response.headers[ANSWER_SIGNATURE_HEADER] = sign_answer(
            SECRET,
            target=request.headers[TARGET_HEADER],
            nonce=request.headers[NONCE_HEADER],
            status=response.status,
            body=response.body,
        )
    return response


def misbehaving(handler: Handler, *, signed: bool = True) -> web.Application:
    """An "agent" that holds the key (its answers are signed) but answers `handler`'s way."""
    app = web.Application(middlewares=[sign_answers] if signed else [])
    app.router.add_get("/v1/facts", handler)
    app.router.add_post("/v1/actions/{name}", handler)
    return app


async def test_reachable_agent_is_up_with_facts_as_detail(
    client: AgentClient, serve: Serve
) -> None:
    """A signed poll of the real agent: UP, ok_at set, the facts as a plain dict in detail."""
    port = await serve(real_agent(database=FixedCheck(DATABASE)))
    obs = await client.check(instance_at(port), timeout_s=2.0)
    assert (obs.target, obs.layer, obs.health, obs.reason) == ("i-0db2", Layer.AGENT, Health.UP, "")
    assert obs.ok_at == obs.attempted_at
    assert obs.detail["checks"]["database"]["data"]["role"] == "replica"
    assert obs.detail["disks"]["/"]["used_percent"] == 40.0
    assert obs.detail["memory"]["used_percent"] == 25.0


async def test_failing_local_check_is_named_in_the_reason(
    client: AgentClient, serve: Serve
) -> None:
    """The agent answers, so it is UP; a critical local check is named in the reason."""
    corrupt = CheckResult("database", "database", Status.CRITICAL, "data corrupt")
    port = await serve(real_agent(database=FixedCheck(corrupt)))
    obs = await client.check(instance_at(port), timeout_s=2.0)
    assert obs.health is Health.UP
    assert obs.reason == "database: critical"
    assert obs.detail["status"] == "critical"


async def test_wrong_secret_is_unknown_not_down(stack: AsyncExitStack, serve: Serve) -> None:
    """When the agent refuses our signature we cannot see it: UNKNOWN, with that reason."""
    session = await stack.enter_async_context(aiohttp.ClientSession())
    client = AgentClient(client_cfg(), b"not-the-agents-secret-000", session)
    port = await serve(real_agent())
    obs = await client.check(instance_at(port), timeout_s=2.0)
    assert (obs.health, obs.reason) == (Health.UNKNOWN, "agent refused our signature")


async def test_connection_refused_is_down(client: AgentClient) -> None:
    """Nothing listens on the agent's port: the host answered "nobody here", so DOWN."""
    obs = await client.check(instance_at(free_port()), timeout_s=2.0)
    assert (obs.health, obs.reason, obs.ok_at) == (Health.DOWN, "connection refused", None)


async def garbage(_request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"<html>it works</html>", content_type="text/html")


async def partial(_request: web.Request) -> web.StreamResponse:
    body = encode_facts_sample()
    return web.Response(body=body[: len(body) // 2], content_type="application/json")


async def wrong_schema(_request: web.Request) -> web.StreamResponse:
    data = json.loads(encode_facts_sample())
    data["schema"] = "drwatch.agent/v9"
    return web.json_response(data)


async def huge(_request: web.Request) -> web.StreamResponse:
    return web.Response(body=b" " * (CAP * 4), content_type="application/json")


async def huge_chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for _ in range(64):
        await resp.write(b"[" * 1024)
    await resp.write_eof()
    return resp


async def server_error(_request: web.Request) -> web.StreamResponse:
    return web.json_response({"error": "host facts did not arrive within 1s"}, status=503)


def encode_facts_sample() -> bytes:
    return encode_facts(sample_facts())


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (garbage, "malformed facts: not JSON"),
        (partial, "malformed facts: not JSON"),
        (wrong_schema, "malformed facts: facts.schema: unknown schema version"),
        (huge, f"answer larger than {CAP} bytes"),
        (huge_chunked, f"answer larger than {CAP} bytes"),
        (server_error, "agent answered 503: host facts did not arrive within 1s"),
    ],
)
async def test_misbehaving_agent_is_unknown_with_a_reason(
    client: AgentClient,
    serve: Serve,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    reason: str,
) -> None:
    """Garbage, partial JSON, an unknown schema, a huge body or an error: UNKNOWN, and why."""
    port = await serve(misbehaving(handler))
    obs = await client.check(instance_at(port), timeout_s=2.0)
    assert obs.health is Health.UNKNOWN
    assert obs.reason.startswith(reason)
    assert obs.detail == {}


async def test_slow_agent_is_unknown_and_the_client_keeps_going(
    client: AgentClient, serve: Serve
) -> None:
    """An agent that never answers is UNKNOWN after the deadline; the next poll still works."""
    hung = asyncio.Event()

    async def slow(_request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(hung.wait(), timeout=30)
        return web.Response()

    slow_port = await serve(misbehaving(slow))
    good_port = await serve(real_agent("i-good"))
    obs = await client.check(instance_at(slow_port), timeout_s=0.2)
    assert (obs.health, obs.reason) == (Health.UNKNOWN, "timeout after 0.2s")
    hung.set()
    good = await client.check(instance_at(good_port, id="i-good"), timeout_s=2.0)
    assert good.health is Health.UP


async def test_ok_at_remembers_the_last_success(client: AgentClient, serve: Serve) -> None:
    """After the agent goes away, the observation still says when it was last seen up."""
    port = await serve(real_agent())
    up = await client.check(instance_at(port), timeout_s=2.0)
    down = await client.check(instance_at(free_port()), timeout_s=2.0)
    assert down.health is Health.DOWN
    assert down.ok_at == up.attempted_at


def test_address_comes_from_the_tag_else_the_configured_ip() -> None:
    """The agent-addr tag wins when allowed; otherwise private or public ip with the port."""
    plain = Instance(
        "i-1", "app-1", "us-east-1", "us-east-1a", Role.APP_SERVER, "app",
        private_ip="10.0.0.5", public_ip="54.1.2.3",
    )  # fmt: skip
    assert agent_address(instance_at(9999), client_cfg()) == ("127.0.0.1", 9999)
    assert agent_address(plain, client_cfg()) == ("10.0.0.5", 9180)
    assert agent_address(plain, client_cfg(address="public_ip", port=9999)) == ("54.1.2.3", 9999)


async def test_instance_without_address_is_unknown(client: AgentClient) -> None:
    """No ip and no tag: UNKNOWN, saying so."""
    bare = Instance("i-2", "app-2", "us-east-1", "us-east-1a", Role.APP_SERVER, "app")
    obs = await client.check(bare, timeout_s=1.0)
    assert (obs.health, obs.reason) == (Health.UNKNOWN, "no address: no ip and no agent-addr tag")


async def test_action_returns_the_agents_result(client: AgentClient, serve: Serve) -> None:
    """A signed action call returns the action's result object, also through the act
    layer's AgentActions protocol (no timeout argument)."""
    port = await serve(real_agent())
    result = await client.action(instance_at(port), "promote", {"target": "x"}, timeout_s=2.0)
    assert result == {"promoted": True}
    actions: AgentActions = client
    assert await actions.action(instance_at(port), "promote", {}) == {"promoted": True}


@pytest.mark.parametrize(
    "case",
    [
        ("reboot", {}, 404, "reboot on db-2: 404: the agent does not allow this action"),
        ("promote", {"fail": "yes"}, 500, "promote on db-2: 500: asked to fail"),
    ],
)
async def test_action_failures_raise_a_clear_error(
    client: AgentClient, serve: Serve, case: tuple[str, dict[str, str], int, str]
) -> None:
    """An unknown or failing action raises AgentActionError with the status and message."""
    name, params, status, message = case
    port = await serve(real_agent())
    with pytest.raises(AgentActionError) as caught:
        await client.action(instance_at(port), name, params, timeout_s=2.0)
    error = caught.value
    assert (error.status, str(error), error.retryable) == (status, message, False)


async def test_action_on_a_dead_agent_is_retryable(client: AgentClient) -> None:
    """Connection refused: the action certainly did not run, so it is safe to retry."""
    with pytest.raises(AgentActionError, match="connection refused") as caught:
        await client.action(instance_at(free_port()), "promote", {}, timeout_s=2.0)
    assert caught.value.retryable


async def test_action_timeout_may_have_run(client: AgentClient, serve: Serve) -> None:
    """No answer in time: the action may have run, so the error is not marked retryable."""
    release = asyncio.Event()

    async def slow(_request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(release.wait(), timeout=30)
        return web.Response()

    port = await serve(misbehaving(slow))
    with pytest.raises(
        AgentActionError, match=r"no answer within 0\.2s; it may have run"
    ) as caught:
        await client.action(instance_at(port), "promote", {}, timeout_s=0.2)
    assert not caught.value.retryable
    release.set()


async def test_client_logs_never_carry_the_secret(stack: AsyncExitStack, serve: Serve) -> None:
    """Transitions and actions are logged; the secret and signatures never are."""
    out = io.StringIO()
    saved = structlog.get_config()
    logs.configure("json", "debug", stream=out)
    try:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        client = AgentClient(client_cfg(), SECRET, session)
        port = await serve(real_agent())
        await client.check(instance_at(port), timeout_s=2.0)
        await client.check(instance_at(free_port()), timeout_s=2.0)
        await client.action(instance_at(port), "promote", {"target": "db-9"}, timeout_s=2.0)
    finally:
        # Put back the very same processor list: loggers bound at import hold it.
        structlog.configure(**saved)
    text = out.getvalue()
    assert "agent.health_changed" in text
    assert "agent.action_sent" in text
    assert SECRET.decode() not in text
    assert "db-9" not in text


async def test_observer_makes_one_agent_job_per_instance(client: AgentClient, serve: Serve) -> None:
    """Each instance gets an AGENT job at the layer's interval; running it polls the agent."""
    port = await serve(real_agent())
    timing = LayerTiming(interval=5.0, timeout=2.0)
    fleet = Fleet((instance_at(port), instance_at(free_port(), id="i-dead")))
    jobs = AgentObserver(client, timing).jobs_for(fleet)
    assert sorted(jobs) == ["agent:i-0db2", "agent:i-dead"]
    job = jobs["agent:i-0db2"]
    assert (job.layer, job.target, job.interval, job.timeout) == (Layer.AGENT, "i-0db2", 5.0, 2.0)
    assert (await job.run()).health is Health.UP
    assert (await jobs["agent:i-dead"].run()).health is Health.DOWN


# --- protocol v2 from the daemon's side -------------------------------------------------


async def good_facts(_request: web.Request) -> web.StreamResponse:
    return web.Response(body=encode_facts_sample(), content_type="application/json")


async def test_address_tag_is_ignored_unless_the_config_allows_it(
    stack: AsyncExitStack, serve: Serve
) -> None:
    """A `drwatch:agent-addr` tag pointing at another server does not redirect the poll
    by default: the agent at the instance's own address answers, the tag's server hears
    nothing. With allow_address_tag the tag is followed."""
    heard: list[str] = []

    async def elsewhere(request: web.Request) -> web.StreamResponse:
        heard.append(request.path)
        return await good_facts(request)

    real_port = await serve(real_agent())
    other_port = await serve(misbehaving(elsewhere))
    session = await stack.enter_async_context(aiohttp.ClientSession())
    tagged = instance_at(other_port, private_ip="127.0.0.1")
    strict = AgentClient(client_cfg(allow_address_tag=False, port=real_port), SECRET, session)
    obs = await strict.check(tagged, timeout_s=2.0)
    assert (obs.health, heard) == (Health.UP, [])
    assert agent_address(tagged, client_cfg(allow_address_tag=False)) == ("127.0.0.1", 9180)
    following = AgentClient(client_cfg(allow_address_tag=True, port=real_port), SECRET, session)
    await following.check(tagged, timeout_s=2.0)
    assert heard == ["/v1/facts"]


async def test_redirect_to_another_agent_is_unknown(client: AgentClient, serve: Serve) -> None:
    """A request for i-0db2 that lands on the agent of i-other (same shared secret) is
    refused there: UNKNOWN, never that other host's facts."""
    other = await serve(real_agent("i-other"))
    obs = await client.check(instance_at(other), timeout_s=2.0)
    assert (obs.health, obs.reason, obs.detail) == (
        Health.UNKNOWN,
        "agent refused our signature",
        {},
    )


async def test_unsigned_answer_is_unknown_with_the_reason(
    client: AgentClient, serve: Serve
) -> None:
    """Well-formed facts that the agent did not sign (an impostor, a v1 agent) are not
    believed: UNKNOWN, saying the answer was not signed."""
    port = await serve(misbehaving(good_facts, signed=False))
    obs = await client.check(instance_at(port), timeout_s=2.0)
    assert obs.health is Health.UNKNOWN
    assert obs.reason.startswith("answer refused: answer not signed")
    assert obs.detail == {}


async def test_answer_signed_for_another_request_is_unknown(
    client: AgentClient, serve: Serve
) -> None:
    """A signed answer replayed to a later request (its nonce differs) does not match."""
    recorded: list[tuple[bytes, str]] = []

    async def replaying(request: web.Request) -> web.StreamResponse:
        if not recorded:
            body = encode_facts_sample()
            nonce = request.headers[NONCE_HEADER]
            sig = sign_answer(SECRET, target="i-0db2", nonce=nonce, status=200, body=body)
            recorded.append((body, sig))
        body, sig = recorded[0]
        return web.Response(
            body=body, content_type="application/json", headers={ANSWER_SIGNATURE_HEADER: sig}
        )

    port = await serve(misbehaving(replaying, signed=False))
    first = await client.check(instance_at(port), timeout_s=2.0)
    second = await client.check(instance_at(port), timeout_s=2.0)
    assert first.health is Health.UP
    assert second.health is Health.UNKNOWN
    assert second.reason.startswith("answer refused: answer signature does not match")


async def test_unsigned_action_answer_is_an_error_that_may_have_run(
    client: AgentClient, serve: Serve
) -> None:
    """An action whose answer is unsigned is not taken as done, nor as safely not done."""

    async def claims_success(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"schema": "drwatch.agent/v1", "result": {"promoted": True}})

    port = await serve(misbehaving(claims_success, signed=False))
    with pytest.raises(AgentActionError, match=r"answer not signed.*it may have run") as caught:
        await client.action(instance_at(port), "promote", {}, timeout_s=2.0)
    assert not caught.value.retryable


async def test_per_host_secrets_open_one_host_each(stack: AsyncExitStack, serve: Serve) -> None:
    """With per_host_secrets the client derives each agent's key from the master secret;
    an agent holding its own derived key answers, and the master itself opens nothing."""
    master = b"master-secret-0123456789abcdef"
    own = derive_host_secret(master, "i-0db2")
    app = create_app(
        agent_cfg(), FakeHost(), {}, {}, secret=own, hostname="db-2", instance_id="i-0db2"
    )
    port = await serve(app)
    session = await stack.enter_async_context(aiohttp.ClientSession())
    per_host = AgentClient(client_cfg(per_host_secrets=True), master, session)
    assert (await per_host.check(instance_at(port), timeout_s=2.0)).health is Health.UP
    shared = AgentClient(client_cfg(), master, session)
    refused = await shared.check(instance_at(port), timeout_s=2.0)
    assert (refused.health, refused.reason) == (Health.UNKNOWN, "agent refused our signature")
    # Another host's secret, leaked, does not open this one.
    leaked = AgentClient(client_cfg(), derive_host_secret(master, "i-other"), session)
    assert (await leaked.check(instance_at(port), timeout_s=2.0)).health is Health.UNKNOWN
