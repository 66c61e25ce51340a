"""The sandbox: moto, the front, simulated hosts, canaries, the service address, the
control API and the real daemon, started together and stopped together.

`Sandbox` owns every process and port it opens; `stop()` closes all of them, also after
a start that failed half way. Its reconciler polls moto directly every `poll_s` and
makes the simulated hosts follow the instances' lives (docs/sandbox.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import secrets
import shutil
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from drwatch.logs import get_logger
from drwatch.model.fleet import Role
from drwatch.sandbox import agent_plug
from drwatch.sandbox.backups import SandboxBackups
from drwatch.sandbox.cloud import Moto, MotoProcess, SandboxError, Seeded, seed, user_data_text
from drwatch.sandbox.cloudview import CloudView, InstanceView, describe
from drwatch.sandbox.cluster import EtcdPath, EtcdProcess, cluster_lines, watcher_name
from drwatch.sandbox.front import Front
from drwatch.sandbox.hosts import SimHost, UserData
from drwatch.sandbox.leftovers import reap_leftovers
from drwatch.sandbox.listener import Gate, Listener, gate_middleware
from drwatch.sandbox.pgworld import Databases, RealDatabases, SimulatedDatabases
from drwatch.sandbox.topology import AGENT_ADDR_TAG, APP_ADDR_TAG, ROLE_TAG, Topology
from drwatch.sandbox.watcher import WatcherProcess, WorldAddresses, render_config

log = get_logger(component="sandbox")

CANARIES = ("canary-1", "canary-2")
STATE_FILE = "sandbox.json"
CONFIG_FILE = "drwatch.toml"
DAEMON_DIR = "daemon"
SERVICE_PATH = "/app/healthz"
# The front's listener for Route 53: a global service, untouched by a region's outage.
ROUTE53 = "route53"


def _ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux), else IANA's."""
    try:
        low = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
        return int(low)
    except (OSError, ValueError, IndexError):
        return 49152


# Every port free_port() has handed out in this process. A simulated host binds its ports
# only when it boots, so a port that is free now may already belong to a host that has
# not booted yet: without this record two hosts drew the same port in a few sandboxes
# of every hundred, and the second never came up (found by a full CI run).
_handed_out: set[int] = set()


# Several sandboxes on one machine (drills run side by side in the test suite) each get
# their own slice of ports through this variable, "LOW-HIGH": a port drawn in one
# process is otherwise invisible to another until its host boots and binds it.
PORTS_ENV = "DRWATCH_SANDBOX_PORTS"


def port_range() -> tuple[int, int]:
    """The inclusive range free_port() draws from: $DRWATCH_SANDBOX_PORTS, else the
    20,000 ports just below the ephemeral range."""
    spec = os.environ.get(PORTS_ENV, "").strip()
    if not spec:
        high = _ephemeral_low() - 1
        return max(1024, high - 20_000), high
    low_s, sep, high_s = spec.partition("-")
    try:
        low, high = int(low_s), int(high_s)
    except ValueError:
        low, high = 0, -1
    if not sep or not 1024 <= low < high <= 65535:
        raise SandboxError(f"{PORTS_ENV}={spec!r}: expected LOW-HIGH within 1024-65535")
    return low, high


def free_port() -> int:
    """A free loopback port BELOW the ephemeral range, never one this process already
    handed out. Simulated hosts close their ports when silenced and bind them again when
    healed; a port from the ephemeral range could meanwhile be taken by any outgoing
    connection (the daemon's checks make many)."""
    low, high = port_range()
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port between {low} and {high}")


API_TOKEN_FILE = "api.token"  # noqa: S105 (a file name, not a secret)


@dataclass
class Options:
    boot_delay_s: float = 2.0
    poll_s: float = 0.5
    with_watcher: bool = True
    # Where the daemon's API listens (default: a free port); tests put a fake API there.
    api_port: int | None = None
    # Alertmanager replicas (API v2 base URLs) the daemon sends its alerts to.
    alertmanager_urls: tuple[str, ...] = ()
    # Give the daemon an API token (api.token in the state directory), so the operator's
    # controls (pause, resume, approve) can be driven through its API, as drills do.
    api_token: bool = False
    # Real PostgreSQL behind the database hosts (pgworld.RealDatabases).
    postgres: bool = False
    # Backups by data class (sandbox.backups): on in `drwatch sandbox` (unless
    # --no-backups); a drill turns them on with `backups = true`, so older drills' and
    # tests' timelines stay as they were.
    backups: bool = False
    # Give the watcher its own copy of the backup key's private half.
    watcher_key: bool = False
    # Every backup class's RPO (a drill's objectives.rpo); None: the sandbox's own.
    backup_rpo: float | None = None
    # More than one: a local etcd and that many daemons, drwatch-1 .. drwatch-N (cluster.py).
    watchers: int = 1


@dataclass
class Outages:
    """Faults that silence hosts, by what they name."""

    impaired: set[str] = field(default_factory=set)  # instance ids
    zones: set[str] = field(default_factory=set)
    regions: set[str] = field(default_factory=set)
    corrupt_volumes: dict[str, float] = field(default_factory=dict)  # id -> marked at
    corrupt_snapshots: set[str] = field(default_factory=set)


class Sandbox:
    def __init__(self, topo: Topology, state_dir: Path, options: Options | None = None) -> None:
        self.topo = topo
        self.state_dir = state_dir.resolve()
        self.options = options or Options()
        self.uplink = Gate()
        self.outages = Outages()
        self.view = CloudView()
        self.hosts: dict[str, SimHost] = {}
        self.seeded = Seeded()
        self.moto_proc = MotoProcess(free_port(), self.state_dir / "moto.log")
        self.moto = Moto(self.moto_proc.url)
        self.secret = secrets.token_hex(32).encode()
        self.api_listen = f"127.0.0.1:{self.options.api_port or free_port()}"
        self.watcher = WatcherProcess(self.state_dir / CONFIG_FILE, self.state_dir / "drwatch.log")
        # Several watchers: the first is `self.watcher` (its API is `api_url`); each other
        # one has its own config, state directory, log and status page.
        self.watchers = [self.watcher]
        self.watcher_listens = [self.api_listen]
        self.etcd: EtcdProcess | None = None
        self.etcd_paths: dict[str, EtcdPath] = {}  # watcher -> its own path (cut-etcd)
        if self.options.watchers > 1:
            self.etcd = EtcdProcess(self.state_dir / "etcd" / "data", free_port(), free_port())
            self.etcd_paths = {
                watcher_name(i): EtcdPath(self.etcd.endpoint, free_port())
                for i in range(self.options.watchers)
            }
            for i in range(1, self.options.watchers):
                name = watcher_name(i)
                self.watchers.append(
                    WatcherProcess(self.state_dir / f"{name}.toml", self.state_dir / f"{name}.log")
                )
                self.watcher_listens.append(f"127.0.0.1:{free_port()}")
        self._session: aiohttp.ClientSession | None = None
        ports = {r: free_port() for r in (*topo.regions, ROUTE53)}
        self.front = Front(self.moto_proc.url, ports, self.uplink, self.session)
        self.canaries = {n: Listener(free_port(), self._canary_app) for n in CANARIES}
        self.service = Listener(free_port(), self._service_app)
        self.control: Listener | None = None  # set by the control module
        self._tasks: set[asyncio.Task[None]] = set()
        self.databases: Databases = (
            RealDatabases(topo, self.state_dir / "pg") if self.options.postgres
            else SimulatedDatabases()
        )  # fmt: skip
        self.backups = (
            SandboxBackups(
                topo, self.state_dir, free_port, self.uplink, self.session,
                watcher_key=self.options.watcher_key, rpo=self.options.backup_rpo,
            ) if self.options.backups else None
        )  # fmt: skip
        self._agent = agent_plug.agent_factory(
            self.secret,
            self.state_dir / "agent.secret",
            self.databases,
            backups=lambda: self.backups.upload_settings() if self.backups else None,
            host_root=self.state_dir / "hosts",
        )
        self._booting: dict[str, float] = {}  # instance id -> running since (monotonic)
        # (watcher, zone) -> set when healed: that watcher's path to that zone (cut-vantage).
        self.vantage_cuts: dict[tuple[str, str], asyncio.Event] = {}

    # --- lifecycle --------------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise SandboxError("the sandbox is not running")
        return self._session

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(reap_leftovers, self.state_dir, STATE_FILE)
        # Every start seeds a new world: the daemon's memory of an old one (incidents,
        # journals naming instances that no longer exist) would be wrong, so it goes.
        shutil.rmtree(self.state_dir / DAEMON_DIR, ignore_errors=True)
        for i in range(1, self.options.watchers):
            shutil.rmtree(self.state_dir / f"{DAEMON_DIR}-{watcher_name(i)}", ignore_errors=True)
        secret_file = self.state_dir / "agent.secret"
        secret_file.write_bytes(self.secret)
        secret_file.chmod(0o600)
        self._session = aiohttp.ClientSession()
        await self.moto_proc.start()
        self.seeded = await asyncio.to_thread(seed, self.moto, self.topo)
        await self.databases.start(self.seeded, free_port)
        await self.front.start()
        if self.backups is not None:
            await self.backups.start()
        for listener in (*self.canaries.values(), self.service):
            await listener.start()
        if self.control is not None:
            await self.control.start()
        await self.poll()
        self._track(self._reconcile_forever())
        await self.databases.run_writer(self.database_target)
        self._write_files(secret_file)
        if self.etcd is not None:
            await self.etcd.start()
        for path in self.etcd_paths.values():
            await path.start()
        if self.options.with_watcher:
            for watcher in self.watchers:
                await watcher.start()
        log.info("sandbox.ready", api=self.api_url, control=self.control_url)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._stop_watchers()
        if self.backups is not None:
            await self.backups.stop()
        await self.databases.stop()
        for host in self.hosts.values():
            await host.close()
        for listener in (*self.canaries.values(), self.service, self.control):
            if listener is not None:
                await listener.stop()
        await self.front.stop()
        await self.moto_proc.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _stop_watchers(self) -> None:
        for watcher in self.watchers:
            await watcher.stop()
        for path in self.etcd_paths.values():
            await path.stop()
        if self.etcd is not None:
            await self.etcd.stop()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def _track(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def after(self, delay_s: float, action: Callable[[], Awaitable[None]]) -> None:
        """Run `action` after `delay_s`, owned by the sandbox (cancelled on stop)."""

        async def later() -> None:
            await asyncio.sleep(delay_s)
            await action()

        self._track(later())

    # --- addresses --------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://{self.api_listen}"

    @property
    def api_urls(self) -> list[str]:
        """Every watcher's API, drwatch-1 first."""
        return [f"http://{listen}" for listen in self.watcher_listens]

    def vantage_cut(self, user_agent: str, zone: str) -> asyncio.Event | None:
        """The heal event if the watcher named in `user_agent` is cut from `zone`."""
        for (watcher, cut_zone), healed in self.vantage_cuts.items():
            if cut_zone == zone and f"({watcher})" in user_agent:
                return healed
        return None

    def watcher_named(self, name: str) -> WatcherProcess | None:
        names = [watcher_name(i) for i in range(len(self.watchers))]
        return self.watchers[names.index(name)] if name in names else None

    @property
    def control_url(self) -> str | None:
        return f"http://{self.control.address}" if self.control else None

    @property
    def service_url(self) -> str:
        return f"http://{self.service.address}{SERVICE_PATH}"

    def canary_urls(self) -> dict[str, str]:
        return {n: f"http://{lst.address}/" for n, lst in self.canaries.items()}

    def _write_files(self, secret_file: Path) -> None:
        where = WorldAddresses(
            listen=self.api_listen,
            state_dir=self.state_dir / DAEMON_DIR,
            secret_file=secret_file,
            endpoints={r: self.front.endpoint(r) for r in self.topo.regions},
            service_url=self.service_url,
            canaries=self.canary_urls(),
            alertmanager_urls=self.options.alertmanager_urls,
            dns_endpoint=self.front.endpoint(ROUTE53) if self.topo.dns else None,
            api_token_file=self._write_api_token() if self.options.api_token else None,
        )
        extra = self.backups.config_lines() if self.backups else []
        (self.state_dir / CONFIG_FILE).write_text(
            render_config(self.topo, where) + "\n".join(extra) + "\n"
        )
        if self.etcd is not None:
            self._write_cluster_configs(where)
        (self.state_dir / STATE_FILE).write_text(json.dumps(self.describe_self(), indent=2))

    def _write_cluster_configs(self, first: WorldAddresses) -> None:
        assert self.etcd is not None
        n = len(self.watchers)
        for i, (watcher, listen) in enumerate(
            zip(self.watchers, self.watcher_listens, strict=True)
        ):
            name = watcher_name(i)
            state_dir = first.state_dir if i == 0 else self.state_dir / f"{DAEMON_DIR}-{name}"
            where = dataclasses.replace(
                first,
                name=name,
                listen=listen,
                state_dir=state_dir,
                extra=tuple(cluster_lines(name, self.etcd_paths[name].endpoint, n)),
                shared_provider=True,
            )
            # Backups on every watcher: the leader runs them, all show them.
            extra = self.backups.config_lines() if self.backups else []
            watcher.config_path.write_text(
                render_config(self.topo, where) + "\n".join(extra) + "\n"
            )

    @property
    def api_token_file(self) -> Path:
        return self.state_dir / API_TOKEN_FILE

    def _write_api_token(self) -> Path:
        path = self.api_token_file
        path.write_text(secrets.token_hex(16))
        path.chmod(0o600)
        return path

    def describe_self(self) -> dict[str, Any]:
        """Where everything is: written to sandbox.json for `drwatch sandbox fault`."""
        return {
            "pid": os.getpid(),
            "api": self.api_url,
            "control": self.control_url,
            "service": self.service_url,
            "moto": self.moto_proc.url,
            # Every moto_server this sandbox runs (the cloud, and with backups its object
            # storage and the off-site provider): a SIGKILLed sandbox leaves them all.
            "motos": [
                self.moto_proc.url,
                *(
                    [self.backups.storage_moto.url, self.backups.offsite_moto.url]
                    if self.backups
                    else []
                ),
            ],
            "front": {r: self.front.endpoint(r) for r in self.topo.regions},
            "canaries": self.canary_urls(),
            "config": str(self.state_dir / CONFIG_FILE),
            "postgres": self.databases.describe(),
            "offsite": self.backups.offsite_moto.url if self.backups else None,
            "backup_key": (
                str(self.backups.key.private_file) if self.backups and self.backups.key else None
            ),
            "watchers": {watcher_name(i): url for i, url in enumerate(self.api_urls)},
            "etcd": self.etcd.endpoint if self.etcd else None,
        }

    # --- the reconciler ---------------------------------------------------------------------

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.poll_s)
            try:
                await self.poll()
            except Exception as err:  # the loop outlives one bad poll
                log.warning("sandbox.poll_failed", error=str(err))

    async def poll(self) -> None:
        """Read moto, adopt new instances, boot or silence hosts, and sync their ports."""
        async with asyncio.timeout(30):
            self.view = await asyncio.to_thread(
                describe, self.moto, self.topo.regions, self._dns_name()
            )
            for inst in self.view.instances.values():
                host = self.hosts.get(inst.id)
                if host is None and inst.state in ("pending", "running"):
                    host = await self._adopt(inst)
                if host is not None:
                    await self._life(host, inst)
            await self.sync_hosts()

    def _dns_name(self) -> tuple[str, str] | None:
        """(hosted zone id, record name) of the service's public name, when seeded."""
        dns, zone = self.topo.dns, self.seeded.hosted_zone
        return (zone, dns.record) if dns is not None and zone else None

    async def _adopt(self, inst: InstanceView) -> SimHost:
        """A new instance: give it loopback ports and tag it with them, as DHCP would."""
        host = SimHost(
            name=inst.name,
            instance_id=inst.id,
            role=self._role_of(inst),
            agent_port=free_port(),
            app_port=free_port(),
            uplink=self.uplink,
            resolve=self.resolve,
            corrupt=self.is_corrupt,
            session=self.session,
            cut=lambda agent: self.vantage_cut(agent, inst.zone),
        )
        host.agent_factory = self._agent
        tags = [
            {"Key": AGENT_ADDR_TAG, "Value": host.agent_addr},
            {"Key": APP_ADDR_TAG, "Value": host.app_addr},
        ]
        ec2 = self.moto.ec2(inst.region)
        await asyncio.to_thread(ec2.create_tags, Resources=[inst.id], Tags=tags)
        self.hosts[inst.id] = host
        log.info("host.adopt", host=host.name, instance=inst.id, agent=host.agent_addr)
        return host

    def _role_of(self, inst: InstanceView) -> Role:
        if inst.tags.get(ROLE_TAG) in {r.value for r in Role}:
            return Role(inst.tags[ROLE_TAG])
        for (region, role), image in self.seeded.images.items():
            if image == inst.image_id and region == inst.region:
                return Role(role)
        return Role.APP_SERVER

    async def _life(self, host: SimHost, inst: InstanceView) -> None:
        """Boot a running instance after the boot delay; a stopped one forgets its boot."""
        if inst.state != "running":
            self._booting.pop(inst.id, None)
            host.booted = False
            return
        if host.booted:
            return
        since = self._booting.setdefault(inst.id, time.monotonic())
        first_seed_boot = host.boots == 0 and inst.id in self.seeded.instances.values()
        # The seeded topology is up from the start; later boots take the boot delay.
        delay = 0.0 if first_seed_boot else self.options.boot_delay_s
        if time.monotonic() - since >= delay and await self.databases.ready_to_boot(
            host, self.view
        ):
            text = await asyncio.to_thread(user_data_text, self.moto.ec2(inst.region), inst.id)
            host.boot(UserData.parse(text))

    async def sync_hosts(self) -> None:
        for host in self.hosts.values():
            inst = self.view.instances.get(host.instance_id)
            host.faults.silenced_by = self._silence(inst)
        # The databases follow before the ports open or close: a host's agent answers only
        # once its server runs, and a silenced host's server is down when the fault returns.
        await self.databases.follow(self.hosts, self.view)
        for host in self.hosts.values():
            await host.sync()

    def _silence(self, inst: InstanceView | None) -> set[str]:
        if inst is None:
            return {"gone"}
        reasons = set()
        if inst.state != "running":
            reasons.add(inst.state)
        if inst.id in self.outages.impaired:
            reasons.add("impaired")
        if inst.zone in self.outages.zones:
            reasons.add(f"zone-outage:{inst.zone}")
        if inst.region in self.outages.regions:
            reasons.add(f"region-outage:{inst.region}")
        return reasons

    # --- lookups the hosts use --------------------------------------------------------------

    def host_named(self, name: str) -> SimHost | None:
        inst = self.view.named(name)
        return self.hosts.get(inst.id) if inst else None

    def database_target(self) -> str | None:
        """The instance behind the database address most answering app servers are told,
        when up. Silent app servers do not count: after a region failover the lost
        region's servers still name the old primary, and the service no longer uses them."""
        told = Counter(
            h.user_data.database
            for h in self.hosts.values()
            if h.role is Role.APP_SERVER and not h.silent and h.user_data.database
        )
        if not told:
            return None
        host = self.host_named(told.most_common(1)[0][0])
        return host.instance_id if host is not None and not host.silent else None

    def resolve(self, ref: str) -> str | None:
        """An app address from `host:port`, or from an instance Name (when it answers)."""
        if ":" in ref:
            return ref
        host = self.host_named(ref)
        return host.app_addr if host is not None and not host.silent else None

    def is_corrupt(self, instance_id: str) -> bool:
        """The instance mounts a volume marked corrupt, or one made from a corrupt snapshot."""
        for vol in self.view.volumes.values():
            if instance_id not in vol.attached_to:
                continue
            if vol.id in self.outages.corrupt_volumes or self._snapshot_corrupt(vol.snapshot_id):
                return True
        return False

    def _snapshot_corrupt(self, snapshot_id: str) -> bool:
        if not snapshot_id:
            return False
        if snapshot_id in self.outages.corrupt_snapshots:
            return True
        snap = self.view.snapshots.get(snapshot_id)
        marked = self.outages.corrupt_volumes.get(snap.volume_id) if snap else None
        # A snapshot taken of a volume after it went corrupt holds the corruption too.
        return snap is not None and marked is not None and snap.started_at >= marked - 1.0

    # --- the canaries and the service address ------------------------------------------------

    def _canary_app(self) -> web.Application:
        async def ok(_request: web.Request) -> web.StreamResponse:
            return web.json_response({"status": "ok"})

        app = web.Application(middlewares=[gate_middleware(self.uplink)])
        app.router.add_get("/", ok)
        return app

    def _service_app(self) -> web.Application:
        app = web.Application(middlewares=[gate_middleware(self.uplink)])
        app.router.add_get("/{tail:.*}", self._serve)
        return app

    def eip_holder(self) -> SimHost | None:
        """The LB holding the service's Elastic IP, as moto says."""
        eip = next((i.elastic_ip for i in self.topo.instance if i.elastic_ip), None)
        holder = self.view.addresses.get(eip) if eip else None
        return self.hosts.get(holder) if holder else None

    def serving_lb(self) -> tuple[SimHost | None, str]:
        """The load balancer behind the service address, and why none when there is none.
        With a DNS zone, the public name's PRIMARY record says which address serves (and
        behind it, the instance holding that Elastic IP or public address); without one,
        the holder of the Elastic IP."""
        if self._dns_name() is None:
            return self.eip_holder(), "no load balancer holds the address"
        answer = self.view.dns_answer
        if not answer:
            return None, "the public name has no PRIMARY record"
        holder = self.view.public_ips.get(answer[0])
        if holder is None:
            return None, f"the public name points at {answer[0]}, which nothing holds"
        return self.hosts.get(holder), f"no load balancer answers at {answer[0]}"

    async def probe_service(self) -> dict[str, Any]:
        """One GET of the service address: its status, the load balancer that answered
        and that load balancer's region (for a drill's report)."""
        try:
            async with self.session().get(
                self.service_url, timeout=aiohttp.ClientTimeout(total=3)
            ) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            return {"ok": False, "status": None, "detail": f"{type(err).__name__}: {err}"}
        via = str(body.get("via", "")) if isinstance(body, dict) else ""
        inst = self.view.named(via) if via else None
        return {
            "ok": 200 <= status < 300,
            "status": status,
            "via": via or None,
            "region": inst.region if inst else None,
            "address": self.view.dns_answer[0] if self.view.dns_answer else None,
            "detail": "" if 200 <= status < 300 else str(body)[:200],
        }

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        """Switching the DNS record (or, inside a region, moving the Elastic IP) moves what
        answers here."""
        holder, why = self.serving_lb()
        if holder is None or holder.silent:
            return web.json_response({"status": why}, status=503)
        try:
            async with self.session().get(
                f"http://{holder.app_addr}{request.path_qs}",
                timeout=aiohttp.ClientTimeout(total=2),
            ) as resp:
                body = await resp.read()
                return web.Response(status=resp.status, body=body, content_type="application/json")
        except (aiohttp.ClientError, TimeoutError):
            return web.json_response({"status": "load balancer not answering"}, status=502)
