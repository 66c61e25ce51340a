"""The real agent over loopback HTTP: signed requests get facts; everything else is refused."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import aiohttp
import pytest
import structlog

from drwatch import logs as agent_log
from drwatch.agent import config as agent_config
from drwatch.agent.actions import Action, ActionError, CommandAction
from drwatch.agent.checks import Check
from drwatch.agent.server import create_app, serving
from drwatch.agent.wire import (
    ANSWER_SIGNATURE_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    CheckResult,
    DiskUsage,
    Load,
    Memory,
    Status,
    answer_refusal,
    decode_facts,
    signed_headers,
    signed_headers_v1,
)

SECRET = b"test-secret-0123456789abcdef"
AGENT_ID = "i-0db2"


class FakeHost:
    """A host whose numbers the test chooses (the sandbox's seam, used the same way)."""

    def __init__(self, used_percent: float = 40.0) -> None:
        self.used_percent = used_percent

    def disks(self) -> list[DiskUsage]:
        total = 100 << 30
        free = int(total * (100 - self.used_percent) / 100)
        return [DiskUsage("/", total, free, self.used_percent)]

    def memory(self) -> Memory:
        return Memory(total_bytes=8 << 30, available_bytes=6 << 30, used_percent=25.0)

    def cpu_percent(self) -> float:
        return 3.5

    def load(self) -> Load:
        return Load(0.1, 0.2, 0.3)

    def uptime_s(self) -> float:
        return 1234.0


@dataclass
class FixedCheck:
    """A check that returns what it is told, after an optional delay."""

    result: CheckResult
    delay_s: float = 0.0
    kind: str = "database"

    async def run(self) -> CheckResult:
        await asyncio.sleep(self.delay_s)
        return self.result


@dataclass
class RecordingAction:
    """An action that records its params; `fail=yes` makes it fail."""

    calls: list[dict[str, str]] = field(default_factory=list)

    async def __call__(self, params: dict[str, str]) -> dict[str, object]:
        if params.get("fail") == "yes":
            raise ActionError("asked to fail", status=500)
        self.calls.append(params)
        return {"promoted": True}


def agent_cfg(**overrides: object) -> agent_config.AgentConfig:
    data: dict[str, object] = {
        "secret_file": "/unused",
        "check_timeout": "300ms",
        "instance_id": AGENT_ID,
        **overrides,
    }
    return agent_config.parse(data)


DATABASE = CheckResult(
    "database", "database", Status.OK, "replica", {"role": "replica", "lag_s": 0.2}
)


@dataclass
class Agent:
    """A running agent on loopback, and a raw client that signs like the daemon does."""

    url: str
    port: int
    session: aiohttp.ClientSession
    instance_id: str = AGENT_ID

    async def send(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        secret: bytes = SECRET,
        now: float | None = None,
        headers: dict[str, str] | None = None,
        target: str | None = None,
    ) -> tuple[int, bytes]:
        sent_at = time.time() if now is None else now
        signed = signed_headers(
            secret, method, path, body, now=sent_at, target=target or self.instance_id
        )
        return await self.raw(method, path, body, {**signed, **(headers or {})})

    async def raw(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        async with (
            asyncio.timeout(10),
            self.session.request(method, self.url + path, data=body, headers=headers) as resp,
        ):
            return resp.status, await resp.read()


StartAgent = Callable[..., Awaitable[Agent]]


@pytest.fixture
async def start_agent() -> AsyncIterator[StartAgent]:
    """Starts agents on free loopback ports; all are stopped after the test."""
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())

        async def start(
            checks: dict[str, Check] | None = None,
            actions: dict[str, Action] | None = None,
            cfg: agent_config.AgentConfig | None = None,
            host: FakeHost | None = None,
            clock: Callable[[], float] = time.time,
        ) -> Agent:
            app = create_app(
                cfg or agent_cfg(),
                host or FakeHost(),
                checks or {},
                actions or {},
                secret=SECRET,
                hostname="db-2",
                clock=clock,
            )
            port = await stack.enter_async_context(serving(app, "127.0.0.1", 0))
            return Agent(f"http://127.0.0.1:{port}", port, session)

        yield start


async def test_signed_request_gets_versioned_facts(start_agent: StartAgent) -> None:
    """A correctly signed GET /v1/facts returns the host's facts and the checks' results."""
    agent = await start_agent(checks={"database": FixedCheck(DATABASE)})
    status, body = await agent.send("GET", "/v1/facts")
    assert status == 200
    facts = decode_facts(body)
    assert facts.hostname == "db-2"
    assert facts.disks["/"].used_percent == 40.0
    assert facts.load.m15 == 0.3
    assert facts.checks["database"].data == {"role": "replica", "lag_s": 0.2}
    assert json.loads(body)["schema"] == "drwatch.agent/v1"


async def test_overall_status_is_the_worst_check(start_agent: StartAgent) -> None:
    """One critical check makes the facts critical; a hanging check is unknown, not fatal."""
    corrupt = CheckResult("database", "database", Status.CRITICAL, "data corrupt")
    agent = await start_agent(
        checks={
            "database": FixedCheck(corrupt),
            "slow": FixedCheck(DATABASE, delay_s=30.0),
        }
    )
    status, body = await agent.send("GET", "/v1/facts")
    facts = decode_facts(body)
    assert status == 200
    assert facts.status is Status.CRITICAL
    assert facts.checks["slow"].status is Status.UNKNOWN
    assert facts.checks["slow"].detail == "timeout after 300ms"


class HungMountHost(FakeHost):
    """statvfs on a hung mount: reading the disks blocks until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def disks(self) -> list[DiskUsage]:
        self.release.wait(30)
        return super().disks()


async def test_host_facts_past_the_deadline_are_a_clear_503(start_agent: StartAgent) -> None:
    """Host facts that do not arrive within the check timeout (a hung mount) answer 503
    with the reason, not a 500 with a traceback (the timeout used to escape wrapped in
    the collector's task group; found by the chaos soak on a loaded machine)."""
    host = HungMountHost()
    agent = await start_agent(host=host)
    try:
        status, body = await agent.send("GET", "/v1/facts")
    finally:
        host.release.set()
    assert status == 503
    assert json.loads(body)["error"] == "host facts did not arrive within 300ms"


async def test_unsigned_request_is_401_without_detail(start_agent: StartAgent) -> None:
    """No auth headers: 401 with an empty body, for known and unknown paths alike."""
    agent = await start_agent()
    assert await agent.raw("GET", "/v1/facts", b"", {}) == (401, b"")
    assert await agent.raw("GET", "/nope", b"", {}) == (401, b"")


async def test_wrong_secret_is_401(start_agent: StartAgent) -> None:
    """A request signed with another secret is refused."""
    agent = await start_agent()
    assert await agent.send("GET", "/v1/facts", secret=b"another-secret-0123456789") == (401, b"")


async def test_tampered_signature_is_401(start_agent: StartAgent) -> None:
    """A signature that differs in one digit is refused."""
    agent = await start_agent()
    headers = signed_headers(SECRET, "GET", "/v1/facts", b"", now=time.time(), target=AGENT_ID)
    last = headers[SIGNATURE_HEADER][-1]
    headers[SIGNATURE_HEADER] = headers[SIGNATURE_HEADER][:-1] + ("0" if last != "0" else "1")
    assert await agent.raw("GET", "/v1/facts", b"", headers) == (401, b"")


@pytest.mark.parametrize("offset_s", [-31.0, 31.0, -3600.0])
async def test_stale_or_future_timestamp_is_401(start_agent: StartAgent, offset_s: float) -> None:
    """A correctly signed request whose timestamp is outside +/-30s is refused."""
    agent = await start_agent()
    status, body = await agent.send("GET", "/v1/facts", now=time.time() + offset_s)
    assert (status, body) == (401, b"")


@dataclass
class FakeClock:
    now: float

    def __call__(self) -> float:
        return self.now


async def test_timestamp_within_the_window_is_accepted(start_agent: StartAgent) -> None:
    """A request signed 20s ago (clock skew within the window) still gets facts from an
    agent that started before that."""
    clock = FakeClock(time.time() - 100.0)
    agent = await start_agent(clock=clock)
    clock.now += 100.0
    status, _ = await agent.send("GET", "/v1/facts", now=clock.now - 20.0)
    assert status == 200


async def test_replayed_request_is_401(start_agent: StartAgent) -> None:
    """The same signed request sent twice: the first is served, the replay refused."""
    agent = await start_agent()
    headers = signed_headers(SECRET, "GET", "/v1/facts", b"", now=time.time(), target=AGENT_ID)
    first = await agent.raw("GET", "/v1/facts", b"", headers)
    second = await agent.raw("GET", "/v1/facts", b"", headers)
    assert first[0] == 200
    assert second == (401, b"")


async def test_signature_covers_the_path(start_agent: StartAgent) -> None:
    """A signature made for one path does not open another."""
    agent = await start_agent(actions={"promote": RecordingAction()})
    headers = signed_headers(SECRET, "GET", "/v1/facts", b"", now=time.time(), target=AGENT_ID)
    assert await agent.raw("POST", "/v1/actions/promote", b"", headers) == (401, b"")


async def test_signature_covers_the_body(start_agent: StartAgent) -> None:
    """Changing the body after signing makes the request invalid."""
    action = RecordingAction()
    agent = await start_agent(actions={"promote": action})
    body = b'{"params": {"target": "a"}}'
    headers = signed_headers(
        SECRET, "POST", "/v1/actions/promote", body, now=time.time(), target=AGENT_ID
    )
    tampered = b'{"params": {"target": "b"}}'
    assert await agent.raw("POST", "/v1/actions/promote", tampered, headers) == (401, b"")
    assert action.calls == []


async def test_oversized_request_is_413(start_agent: StartAgent) -> None:
    """A body over max_request_bytes is refused with 413, signed or not."""
    agent = await start_agent(actions={"promote": RecordingAction()})
    big = b"x" * (64 * 1024 + 1)
    status, _ = await agent.send("POST", "/v1/actions/promote", big)
    assert status == 413
    status, _ = await agent.raw("POST", "/v1/actions/promote", big, {})
    assert status == 413


async def test_oversized_chunked_request_is_413(start_agent: StartAgent) -> None:
    """A chunked body (no Content-Length) that grows past the limit is refused too."""
    agent = await start_agent(actions={"promote": RecordingAction()})

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"y" * 8192

    async with (
        asyncio.timeout(10),
        agent.session.post(agent.url + "/v1/actions/promote", data=chunks()) as resp,
    ):
        assert resp.status == 413


async def test_allow_listed_action_runs_with_its_params(start_agent: StartAgent) -> None:
    """POST /v1/actions/NAME runs the registered action and answers with its result."""
    action = RecordingAction()
    agent = await start_agent(actions={"promote": action})
    body = b'{"params": {"target": "db-2"}}'
    status, answer = await agent.send("POST", "/v1/actions/promote", body)
    assert status == 200
    assert json.loads(answer) == {
        "schema": "drwatch.agent/v1",
        "action": "promote",
        "result": {"promoted": True},
    }
    assert action.calls == [{"target": "db-2"}]


async def test_unknown_action_is_404(start_agent: StartAgent) -> None:
    """An action that is not in the registry is a 404: the agent runs nothing it was sent."""
    agent = await start_agent(actions={"promote": RecordingAction()})
    status, answer = await agent.send("POST", "/v1/actions/rm-rf", b"{}")
    assert status == 404
    assert json.loads(answer)["error"] == "unknown action"


async def test_failed_action_reports_its_error(start_agent: StartAgent) -> None:
    """An action that raises ActionError answers with its status and message."""
    agent = await start_agent(actions={"promote": RecordingAction()})
    status, answer = await agent.send("POST", "/v1/actions/promote", b'{"params":{"fail":"yes"}}')
    assert status == 500
    assert json.loads(answer)["error"] == "asked to fail"


async def test_malformed_action_params_are_400(start_agent: StartAgent) -> None:
    """Params that are not a flat object of strings are refused before the action runs."""
    action = RecordingAction()
    agent = await start_agent(actions={"promote": action})
    status, answer = await agent.send("POST", "/v1/actions/promote", b'{"params":{"n":1}}')
    assert status == 400
    assert "params.n" in json.loads(answer)["error"]
    assert action.calls == []


def command_action(argv: list[str], params: list[str], timeout: str = "5s") -> CommandAction:
    data = {"name": "run", "argv": argv, "params": params, "timeout": timeout}
    return CommandAction(agent_config.CommandActionConfig.model_validate(data))


async def test_command_action_gets_params_only_as_environment(start_agent: StartAgent) -> None:
    """A configured command runs without a shell; params arrive as DRWATCH_PARAM_* variables."""
    script = "import os, sys; print(os.environ['DRWATCH_PARAM_TARGET'], sys.argv[1:])"
    action = command_action([sys.executable, "-c", script], ["target"])
    agent = await start_agent(actions={"run": action})
    body = b'{"params": {"target": "$(touch /tmp/pwned); db-2"}}'
    status, answer = await agent.send("POST", "/v1/actions/run", body)
    assert status == 200
    result = json.loads(answer)["result"]
    assert result["output"] == "$(touch /tmp/pwned); db-2 []\n"


async def test_command_action_refuses_undeclared_params(start_agent: StartAgent) -> None:
    """A parameter the config did not declare is a 400, and the command does not run."""
    action = command_action([sys.executable, "-c", "print('ran')"], ["target"])
    agent = await start_agent(actions={"run": action})
    status, answer = await agent.send("POST", "/v1/actions/run", b'{"params": {"argv": "x"}}')
    assert status == 400
    assert "unknown parameter(s): argv" in json.loads(answer)["error"]


async def test_command_action_failure_and_timeout(start_agent: StartAgent) -> None:
    """A non-zero exit is a 500 with the output's tail; a command past its timeout is killed."""
    failing = command_action([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], [])
    hanging = command_action([sys.executable, "-c", "import time; time.sleep(60)"], [], "200ms")
    agent = await start_agent(actions={"fail": failing, "hang": hanging})
    status, answer = await agent.send("POST", "/v1/actions/fail", b"")
    assert status == 500
    assert json.loads(answer)["error"] == "run: exit status 3: boom\n"
    status, answer = await agent.send("POST", "/v1/actions/hang", b"")
    assert status == 500
    assert json.loads(answer)["error"] == "run: timed out after 200ms"


async def test_agent_logs_never_carry_the_secret(start_agent: StartAgent) -> None:
    """Refusals and actions are logged, and neither the secret nor a signature appears."""
    out = io.StringIO()
    saved = structlog.get_config()
    agent_log.configure("json", "debug", stream=out)
    try:
        agent = await start_agent(actions={"promote": RecordingAction()})
        headers = signed_headers(SECRET, "GET", "/v1/facts", b"", now=time.time(), target=AGENT_ID)
        await agent.raw("GET", "/v1/facts", b"", headers)
        await agent.raw("GET", "/v1/facts", b"", headers)  # replay: logged as refused
        await agent.send("POST", "/v1/actions/promote", b'{"params": {"target": "db-2"}}')
    finally:
        # Put back the very same processor list: loggers bound at import hold it.
        structlog.configure(**saved)
    text = out.getvalue()
    assert "agent.request_refused" in text
    assert "agent.action_finished" in text
    assert SECRET.decode() not in text
    assert headers[SIGNATURE_HEADER] not in text
    assert "db-2" not in text  # param values are not logged either, only their names


# --- protocol v2: the target, the agent's start, signed answers, v1 behind a setting ------


async def test_request_signed_for_one_agent_is_refused_by_another(start_agent: StartAgent) -> None:
    """A promote signed for i-a and replayed to i-b (same shared secret) is refused there,
    and the action does not run on i-b."""
    on_a, on_b = RecordingAction(), RecordingAction()
    agent_a = await start_agent(actions={"promote": on_a}, cfg=agent_cfg(instance_id="i-a"))
    agent_b = await start_agent(actions={"promote": on_b}, cfg=agent_cfg(instance_id="i-b"))
    path, body = "/v1/actions/promote", b'{"params": {"target": "db-2"}}'
    headers = signed_headers(SECRET, "POST", path, body, now=time.time(), target="i-a")
    assert (await agent_a.raw("POST", path, body, headers))[0] == 200
    assert await agent_b.raw("POST", path, body, headers) == (401, b"")
    assert (len(on_a.calls), on_b.calls) == (1, [])


async def test_request_signed_before_a_restart_is_refused_after_it(
    start_agent: StartAgent,
) -> None:
    """The replay cache is in memory; a request signed before the agent (re)started is
    refused by the new process anyway, though it is well within the clock-skew window."""
    action = RecordingAction()
    path, body = "/v1/actions/promote", b'{"params": {"target": "db-2"}}'
    before = await start_agent(actions={"promote": action})
    headers = signed_headers(SECRET, "POST", path, body, now=time.time(), target=AGENT_ID)
    assert (await before.raw("POST", path, body, headers))[0] == 200
    after = await start_agent(actions={"promote": action})  # a fresh process: empty cache
    assert await after.raw("POST", path, body, headers) == (401, b"")
    assert len(action.calls) == 1


async def test_answers_are_signed_for_the_requests_nonce(start_agent: StartAgent) -> None:
    """Facts, action results and errors all carry a signature over the target, the
    request's nonce, the status and the body; refusals carry none."""
    agent = await start_agent(actions={"promote": RecordingAction()})
    for method, path, body in (
        ("GET", "/v1/facts", b""),
        ("POST", "/v1/actions/promote", b"{}"),
        ("POST", "/v1/actions/nope", b"{}"),
        ("GET", "/no/such/route", b""),
    ):
        headers = signed_headers(SECRET, method, path, body, now=time.time(), target=AGENT_ID)
        async with agent.session.request(
            method, agent.url + path, data=body, headers=headers
        ) as resp:
            answer = await resp.read()
            given = resp.headers.get(ANSWER_SIGNATURE_HEADER)
            refusal = answer_refusal(
                SECRET,
                target=AGENT_ID,
                nonce=headers[NONCE_HEADER],
                status=resp.status,
                body=answer,
                given=given,
            )
            assert refusal == "", (path, resp.status, refusal)
    async with agent.session.get(agent.url + "/v1/facts") as resp:
        assert resp.status == 401
        assert ANSWER_SIGNATURE_HEADER not in resp.headers


async def test_v1_requests_are_refused_unless_accept_v1(start_agent: StartAgent) -> None:
    """A v1 request (no target) is a 401 by default; with accept_v1 it is served, and
    every v1 request is logged as such."""
    strict = await start_agent()
    path = "/v1/facts"
    v1 = signed_headers_v1(SECRET, "GET", path, b"", now=time.time())
    assert await strict.raw("GET", path, b"", v1) == (401, b"")
    out = io.StringIO()
    saved = structlog.get_config()
    agent_log.configure("json", "debug", stream=out)
    try:
        upgrading = await start_agent(cfg=agent_cfg(accept_v1=True))
        fresh = signed_headers_v1(SECRET, "GET", path, b"", now=time.time())
        status, _ = await upgrading.raw("GET", path, b"", fresh)
    finally:
        structlog.configure(**saved)
    assert status == 200
    assert "agent.v1_request_accepted" in out.getvalue()


async def test_unknown_protocol_version_is_401(start_agent: StartAgent) -> None:
    """A version the agent does not speak is refused, not guessed at."""
    agent = await start_agent()
    status, _ = await agent.send("GET", "/v1/facts", headers={"X-Drwatch-Version": "3"})
    assert status == 401


class HeldAction:
    """An action that holds until released; `exclusive` as the server reads it."""

    def __init__(self, exclusive: bool) -> None:
        self.exclusive = exclusive
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, params: dict[str, str]) -> dict[str, object]:
        self.started.set()
        await self.release.wait()
        return {"done": True}


async def test_a_long_backup_holds_no_other_action_back(start_agent: StartAgent) -> None:
    """A non-exclusive action (the backup: a dump of minutes) runs beside the others:
    a promote answers while it is still running. Exclusive ones still wait for each
    other (one side effect at a time on one host)."""
    backup, promote = HeldAction(exclusive=False), RecordingAction()
    agent = await start_agent(actions={"backup": backup, "promote": promote})
    running = asyncio.create_task(agent.send("POST", "/v1/actions/backup", b""))
    try:
        async with asyncio.timeout(10):
            await backup.started.wait()
            status, _ = await agent.send("POST", "/v1/actions/promote", b"")
        assert status == 200
        assert promote.calls == [{}]
    finally:
        backup.release.set()
        assert (await running)[0] == 200
