"""Issue #6's acceptance against a running sandbox: what on-call sees during a zone outage.

One world serves the module: a real Alertmanager (Debian's) on loopback, and a sandbox
(moto, simulated hosts, the real daemon as a process) whose daemon pushes its alerts
there. The first test to need it injects `zone-outage` on us-east-1c, once; the tests
then read the operator surfaces while the incident is open and after it recovers:
Alertmanager's API, the status page in headless Chromium, /metrics through promtool
(and a real Prometheus scraping it), and the CLI against the JSON API.

Replacements boot `BOOT_DELAY_S` after launch, so the incident stays open long enough
for the page to be rendered while it is. Every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import psutil
import pytest
import pytest_asyncio

from drwatch.client import AUTH_FILE_ENV
from drwatch.sandbox import control
from drwatch.sandbox.chaos import Chaos
from drwatch.sandbox.faults import Fault
from drwatch.sandbox.topology import default_topology
from drwatch.sandbox.world import Options, Sandbox
from tests.support.operator_services import (
    alertmanager,
    alertmanager_alerts,
    chromium,
    dom_text,
)
from tests.support.services import assert_promtool_clean, free_port, need_binary, process, wait_http

pytestmark = [pytest.mark.services, pytest.mark.asyncio(loop_scope="module")]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
REGION, ZONE = "us-east-1", "us-east-1c"
ZONE_INSTANCES = {"app-5", "app-6"}
# Replacements boot this long after launch: the zone incident stays open a few seconds
# longer, to be looked at. Not much longer: a replacement still silent ~8 s after launch
# is taken for a lost instance of its own (an instance incident: see the metrics test).
BOOT_DELAY_S = 10.0  # slower than the dead grace: a booting replacement is not a lost instance
HEALTHY_DEADLINE_S = 60.0
OPEN_DEADLINE_S = 30.0
RECOVERED_DEADLINE_S = 90.0
RESOLVED_DEADLINE_S = 30.0
T = TypeVar("T")


async def until(what: str, probe: Callable[[], Awaitable[T | None]], deadline_s: float) -> T:
    """Poll `probe` until it returns a value; fail naming `what` after the deadline."""
    try:
        async with asyncio.timeout(deadline_s):
            while True:
                found = await probe()
                if found is not None:
                    return found
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {deadline_s:.0f}s") from None


class OperatorWorld:
    """The sandbox, its chaos handle and Alertmanager, with the outage's milestones."""

    def __init__(
        self, sb: Sandbox, chaos: Chaos, am_url: str, session: aiohttp.ClientSession, tmp: Path
    ) -> None:
        self.sb = sb
        self.chaos = chaos
        self.am_url = am_url
        self.session = session
        self.tmp = tmp
        self._lock = asyncio.Lock()
        self._injected = False
        self.last_status = "no answer yet"  # what the daemon said while not yet healthy

    async def get(self, path: str) -> Any:
        async with self.session.get(f"{self.sb.api_url}{path}") as resp:
            assert resp.status == 200, f"GET {path}: {resp.status}"
            return await resp.json()

    async def text(self, path: str) -> str:
        async with self.session.get(f"{self.sb.api_url}{path}") as resp:
            assert resp.status == 200, f"GET {path}: {resp.status}"
            return await resp.text()

    async def _zone_incident(self) -> dict[str, Any] | None:
        body = await self.get("/api/v1/incidents")
        found = [i for i in body["incidents"] if i["scope"] == "zone" and i["zone"] == ZONE]
        return found[0] if found else None

    async def open_zone_incident(self) -> dict[str, Any]:
        """Inject the zone outage (once per module); the zone incident once it is acting."""
        async with self._lock:
            if not self._injected:
                await self.chaos.do(Fault("zone-outage", ZONE, {}))
                self._injected = True

        async def acting() -> dict[str, Any] | None:
            inc = await self._zone_incident()
            return inc if inc is not None and inc["steps"] else None

        return await until(f"a zone incident for {ZONE} with steps", acting, OPEN_DEADLINE_S)

    async def recovered_zone_incident(self) -> dict[str, Any]:
        """The zone incident once its playbook has recovered it."""
        await self.open_zone_incident()

        async def recovered() -> dict[str, Any] | None:
            inc = await self._zone_incident()
            return inc if inc is not None and inc["outcome"] == "recovered" else None

        return await until("the zone incident recovered", recovered, RECOVERED_DEADLINE_S)

    async def alerts(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(alertmanager_alerts, self.am_url)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[OperatorWorld]:
    """Alertmanager, then the sandbox sending it alerts, once every target is healthy.
    Afterwards no process it started is left, and none of its ports listens."""
    am_binary = need_binary("prometheus-alertmanager")
    need_binary("moto_server", str(Path(sys.executable).parent))
    tmp = tmp_path_factory.mktemp("operator-e2e")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with ExitStack() as stack:
        am_url = stack.enter_context(alertmanager(am_binary, tmp / "alertmanager"))
        options = Options(boot_delay_s=BOOT_DELAY_S, alertmanager_urls=(am_url,))
        sb = Sandbox(default_topology(), tmp / "sandbox", options)
        chaos = control.attach(sb)
        async with sb, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            ops = OperatorWorld(sb, chaos, am_url, session, tmp)
            try:
                await until("every target healthy", _all_healthy(ops), HEALTHY_DEADLINE_S)
            except AssertionError as err:
                raise AssertionError(f"{err}; last status: {ops.last_status}") from None
            yield ops
            ports = [_port(am_url), _port(sb.api_url), _port(sb.moto_proc.url)]
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert [p.pid for p in left if _alive(p)] == []
    assert [p for p in ports if _listening(p)] == []


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _all_healthy(ops: OperatorWorld) -> Callable[[], Awaitable[bool | None]]:
    async def probe() -> bool | None:
        try:
            status = await ops.get("/api/v1/status")
        except (aiohttp.ClientError, TimeoutError, AssertionError):
            return None  # the daemon is still starting
        if status["all_healthy"]:
            return True
        ops.last_status = status["summary"]
        return None

    return probe


async def test_zone_outage_raises_exactly_one_zone_alert(world: OperatorWorld) -> None:
    """Alertmanager holds one zone alert with drwatch's labels, and none for app-5/app-6."""
    inc = await world.open_zone_incident()

    async def zone_alerts() -> list[dict[str, Any]] | None:
        found = [a for a in await world.alerts() if a["labels"].get("scope") == "zone"]
        return found or None

    alerts = await until("a zone alert in Alertmanager", zone_alerts, OPEN_DEADLINE_S)
    assert len(alerts) == 1, alerts
    (alert,) = alerts
    assert alert["labels"] == {
        "alertname": "DrwatchZoneOutage",
        "severity": "critical",
        "scope": "zone",
        "role": inc["role"],
        "region": REGION,
        "zone": ZONE,
        "incident": inc["id"],
    }
    assert inc["role"] == "app_server"
    assert alert["status"]["state"] == "active"
    assert ZONE in alert["annotations"]["summary"]
    assert alert["generatorURL"].startswith(world.sb.api_url)
    # The zone finding absorbs its instances: no instance alert fires beside it.
    everything = await world.alerts()
    assert [a["labels"] for a in everything if a["labels"].get("scope") == "instance"] == []
    assert set(inc["targets"]) == ZONE_INSTANCES


async def test_status_page_shows_the_open_zone_incident_and_its_steps(
    world: OperatorWorld,
) -> None:
    """Chromium renders the daemon's page while the incident is open: card, targets, steps;
    a screenshot is written to test-artifacts/status-page-sandbox.png."""
    inc = await world.open_zone_incident()
    page = f"{world.sb.api_url}/"
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page-sandbox.png"
    shot.unlink(missing_ok=True)
    # Both at once (own profiles), so both see the incident within its open window.
    dom, _ = await asyncio.gather(
        chromium(world.tmp / "dom", "--dump-dom", page),
        chromium(world.tmp / "shot", f"--screenshot={shot}", "--window-size=1280,1400", page),
    )
    # Incident cards are drawn only for open incidents (ended ones are one line under
    # "Recent incidents"): the card below proves the page was read while it was open.
    card = re.search(rf'<article [^>]*id="incident-{inc["id"]}".*?</article>', dom, re.S)
    assert card is not None, dom_text(dom)
    text = dom_text(card.group(0))
    assert f"zone {ZONE} · zone_outage" in text
    assert "playbook app_server.replace" in text
    for name in ZONE_INSTANCES:
        assert name in text
    assert "launch_replacement" in text
    for step in inc["steps"]:
        assert step["name"] in text
    assert 'data-zone="us-east-1c"' in dom
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_the_alert_resolves_after_recovery(world: OperatorWorld) -> None:
    """Once the playbook recovers the zone, its alert leaves Alertmanager's active list."""
    inc = await world.recovered_zone_incident()
    assert inc["playbook"] == "app_server.replace"

    async def resolved() -> bool | None:
        mine = [a for a in await world.alerts() if a["labels"].get("incident") == inc["id"]]
        return True if not mine else None

    await until("the zone alert resolved in Alertmanager", resolved, RESOLVED_DEADLINE_S)


async def test_metrics_pass_promtool_and_count_the_zone_incident(world: OperatorWorld) -> None:
    """/metrics lints clean with promtool; it counts one zone incident and no instance one."""
    await world.recovered_zone_incident()
    body = await world.text("/metrics")
    await asyncio.to_thread(assert_promtool_clean, body.encode())
    samples = _samples(body)
    assert samples['drwatch_incidents_opened_total{scope="zone"}'] == 1.0
    # No instance incident at all: the zone finding absorbed app-5 and app-6, and their
    # replacements came up before they could be taken for lost instances.
    assert samples['drwatch_incidents_opened_total{scope="instance"}'] == 0.0, await _brief(world)
    assert samples['drwatch_incidents_active{scope="zone"}'] == 0.0
    delivered = [k for k in samples if k.startswith("drwatch_alert_deliveries_total")]
    assert sum(samples[k] for k in delivered) >= 2.0  # the firing push and the resolving one


async def _brief(world: OperatorWorld) -> list[tuple[str, list[str], str, str | None]]:
    body = await world.get("/api/v1/incidents")
    return [(i["scope"], i["targets"], i["finding"], i["outcome"]) for i in body["incidents"]]


async def test_metrics_count_the_recovering_playbook_run(world: OperatorWorld) -> None:
    """The run that recovered the zone shows in drwatch_playbook_runs_total as succeeded."""
    await world.recovered_zone_incident()
    runs = 'drwatch_playbook_runs_total{outcome="succeeded",playbook="app_server.replace"}'

    async def counted() -> bool | None:
        return True if _samples(await world.text("/metrics")).get(runs, 0.0) >= 1.0 else None

    await until("the recovering run counted", counted, 10.0)


def _samples(exposition: str) -> dict[str, float]:
    """`name{labels}` -> value, labels sorted, from the text format."""
    out: dict[str, float] = {}
    for line in exposition.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        if "{" in series:
            name, labels = series[:-1].split("{", 1)
            series = name + "{" + ",".join(sorted(labels.split(","))) + "}"
        out[series] = float(value)
    return out


@contextmanager
def _prometheus(binary: str, work: Path, target: str) -> Iterator[str]:
    """Prometheus scraping `target` every second; its API base URL."""
    work.mkdir()
    (work / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        f"scrape_configs:\n  - job_name: drwatch\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    port = free_port()
    argv = [
        binary,
        f"--config.file={work / 'prometheus.yml'}",
        f"--storage.tsdb.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with process(argv) as proc:
        wait_http(f"http://127.0.0.1:{port}/-/ready", 30.0, proc=proc)
        yield f"http://127.0.0.1:{port}/api/v1"


async def test_prometheus_scrapes_the_sandbox_daemon(world: OperatorWorld) -> None:
    """A real Prometheus scrapes the sandbox daemon: the target is up, drwatch_ series land."""
    binary = need_binary("prometheus")
    target = world.sb.api_listen
    with _prometheus(binary, world.tmp / "prometheus", target) as api:

        async def query(expr: str) -> list[dict[str, Any]] | None:
            async with world.session.get(f"{api}/query", params={"query": expr}) as resp:
                result: list[dict[str, Any]] = (await resp.json())["data"]["result"]
            return result or None

        up = await until("Prometheus scraping drwatch", lambda: query("up == 1"), 30.0)
        assert up[0]["metric"]["instance"] == target
        builds = await until("drwatch_build_info", lambda: query("drwatch_build_info"), 30.0)
        assert builds[0]["metric"]["job"] == "drwatch"


async def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    # No token from the environment: the sandbox daemon has none configured either.
    env = {k: v for k, v in os.environ.items() if k != AUTH_FILE_ENV}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "drwatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


async def _cli(*args: str) -> Any:
    result = await _run_cli(*args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _status_facts(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "counts": status["counts"],
        "all_healthy": status["all_healthy"],
        "watcher": status["watcher"]["state"],
        "open": sorted(i["id"] for i in status["open_incidents"]),
        "targets": sorted((t["name"], t["state"]) for t in status["targets"]),
    }


def _incident_facts(body: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    return [(i["id"], i["outcome"], i["state"]) for i in body["incidents"]]


async def test_cli_status_and_incidents_say_what_the_api_says(world: OperatorWorld) -> None:
    """`drwatch status --json` and `drwatch incidents --json` match the API's facts."""
    inc = await world.recovered_zone_incident()
    api = world.sb.api_url

    async def agreed() -> tuple[Any, Any] | None:
        # The world still moves (replacements join); compare against a stable API reading.
        before = await world.get("/api/v1/status"), await world.get("/api/v1/incidents")
        cli = (
            await _cli("status", "--json", "--api", api),
            await _cli("incidents", "--json", "--api", api),
        )
        after = await world.get("/api/v1/status"), await world.get("/api/v1/incidents")
        facts = [(_status_facts(s), _incident_facts(i)) for s, i in (before, cli, after)]
        if facts[0] != facts[2]:
            return None
        return facts[1], facts[0]

    cli_facts, api_facts = await until("a stable reading to compare", agreed, 30.0)
    assert cli_facts == api_facts
    assert (inc["id"], "recovered", "ended") in cli_facts[1]


async def test_cli_approve_without_a_token_says_how_to_set_one(world: OperatorWorld) -> None:
    """`drwatch approve` against a daemon with no API token: exit 2 and a message naming
    the setting, not a traceback."""
    inc = await world.open_zone_incident()
    result = await _run_cli("approve", inc["id"], "--api", world.sb.api_url)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "HTTP 403" in result.stderr
    assert "watcher.api_token_file" in result.stderr
    assert "Traceback" not in result.stderr
