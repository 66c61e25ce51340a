"""Several watchers in the sandbox: a local etcd and daemons drwatch-1 .. drwatch-N.

`EtcdProcess` runs Debian's `etcd` on loopback with its data in the sandbox's state
directory; `etcd-outage` stops it answering (SIGSTOP: the sockets stay open and every
call times out, as a partition would) and `heal` brings it back (SIGCONT). Each watcher
is a real `drwatch run` with its own config, state directory and status page; the
`[cluster]` section below uses short sandbox timing (lease 4 s) so a drill sees a
takeover in seconds.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from drwatch.fields import split_host_port
from drwatch.logs import get_logger
from drwatch.sandbox.cloud import SandboxError
from drwatch.sandbox.daemon_api import DaemonApi, Incident, SeenFinding

log = get_logger(component="sandbox.cluster")

ETCD_BINARY = "etcd"
NAMESPACE = "drwatch"
READY_DEADLINE_S = 20.0


def watcher_name(i: int) -> str:
    return f"drwatch-{i + 1}"


def cluster_lines(name: str, endpoint: str, watchers: int) -> list[str]:
    """The `[cluster]` section of one sandbox watcher's config."""
    return [
        "[cluster]",
        f'name = "{name}"',
        f'endpoints = ["{endpoint}"]',
        f'namespace = "{NAMESPACE}"',
        'lease_ttl = "4s"',
        'keepalive_interval = "1s"',
        'request_timeout = "500ms"',
        'safety_margin = "1s"',
        f"watchers = {watchers}",
        "",
    ]


class EtcdProcess:
    """One etcd member on 127.0.0.1, data under `data_dir`."""

    def __init__(self, data_dir: Path, client_port: int, peer_port: int) -> None:
        self.data_dir = data_dir
        self.client_port = client_port
        self.peer_port = peer_port
        self.paused = False
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    async def start(self) -> None:
        binary = shutil.which(ETCD_BINARY)
        if binary is None:
            raise SandboxError(
                "etcd is not installed: ./dev system-deps installs it (Debian etcd-server)"
            )
        shutil.rmtree(self.data_dir, ignore_errors=True)  # a fresh world, a fresh etcd
        self.data_dir.mkdir(parents=True)
        client = f"http://{self.endpoint}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        with (self.data_dir.parent / "etcd.log").open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                binary,
                "--name=sandbox",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=sandbox={peer}",
                "--log-level=error",
                "--logger=zap",
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        await self._wait_healthy()
        log.info("etcd.start", pid=self._proc.pid, endpoint=self.endpoint)

    async def _wait_healthy(self) -> None:
        url = f"http://{self.endpoint}/health"
        async with aiohttp.ClientSession() as session:
            try:
                async with asyncio.timeout(READY_DEADLINE_S):
                    while not await _healthy(session, url):
                        if self._proc is not None and self._proc.returncode is not None:
                            raise SandboxError(f"etcd exited; see {self.data_dir.parent}/etcd.log")
                        await asyncio.sleep(0.1)
            except TimeoutError:
                raise SandboxError(f"etcd did not become healthy at {url}") from None

    def pause(self) -> None:
        """etcd stops answering (SIGSTOP): every call to it times out."""
        if self._proc is not None and not self.paused:
            self._proc.send_signal(signal.SIGSTOP)
            self.paused = True
            log.info("etcd.paused")

    def resume(self) -> None:
        if self._proc is not None and self.paused:
            self._proc.send_signal(signal.SIGCONT)
            self.paused = False
            log.info("etcd.resumed")

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        if self.paused:
            proc.send_signal(signal.SIGCONT)
            self.paused = False
        proc.terminate()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _healthy(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
            body = await resp.read()
            return resp.status == 200 and json.loads(body).get("health") == "true"
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False


async def leader_of(session: aiohttp.ClientSession, api_urls: list[str]) -> str | None:
    """Who leads, as the first watcher that answers says (its status's `cluster.leader`)."""
    for url in api_urls:
        try:
            async with session.get(
                f"{url}/api/v1/status", timeout=aiohttp.ClientTimeout(total=2)
            ) as resp:
                if resp.status != 200:
                    continue
                doc = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            continue
        cluster = doc.get("cluster") if isinstance(doc, dict) else None
        if isinstance(cluster, dict) and cluster.get("role") in ("leader", "follower"):
            leader = cluster.get("leader")
            return str(leader) if leader else None
    return None


class WatcherApis:
    """Several daemons' APIs read as one, for the drill: incidents and findings from the
    first watcher that answers (followers show the leader's incidents), healthy only when
    every watcher says so and one of them leads."""

    def __init__(self, urls: list[str], session: aiohttp.ClientSession) -> None:
        self.urls = urls
        self.session = session
        self.apis = [DaemonApi(url, session) for url in urls]

    async def incidents(self) -> list[Incident] | None:
        for api in self.apis:
            found = await api.incidents()
            if found is not None:
                return found
        return None

    async def findings(self) -> list[SeenFinding] | None:
        """Every watcher's findings, merged: what any of them shows counts."""
        merged: dict[tuple[str, tuple[str, ...], str | None], SeenFinding] = {}
        answered = False
        for api in self.apis:
            found = await api.findings()
            answered = answered or found is not None
            for f in found or []:
                merged.setdefault((f.finding, f.targets, f.data_class), f)
        return list(merged.values()) if answered else None

    async def backups(self) -> list[tuple[str, str, str, str, str]] | None:
        """The backups every watcher that answers shows (the catalogue is shared: a row
        only one watcher shows is not yet, or no longer, everyone's)."""
        seen = [found for api in self.apis if (found := await api.backups()) is not None]
        if not seen:
            return None
        common = set(seen[0]).intersection(*seen[1:])
        return [row for row in seen[0] if row in common]

    async def healthy(self) -> bool:
        # Never None ("no daemon API here"): the watchers are there, only not up yet.
        answers = [await api.healthy() for api in self.apis]
        return all(answers) and await leader_of(self.session, self.urls) is not None

    async def leader(self) -> str | None:
        return await leader_of(self.session, self.urls)


@dataclass
class LeaderLog:
    """Who led when, in seconds from the drill's start: the report's `leaders[]`."""

    start: float
    terms: list[dict[str, Any]] = field(default_factory=list)

    def saw(self, leader: str | None, at: float) -> None:
        last = self.terms[-1] if self.terms else None
        if last is not None and last["to_s"] is None:
            if last["name"] == leader:
                return
            last["to_s"] = round(at - self.start, 3)
        if leader is not None:
            self.terms.append({"name": leader, "from_s": round(at - self.start, 3), "to_s": None})


class EtcdPath:
    """One watcher's own path to etcd: a TCP relay on loopback that `cut-etcd` black-holes
    (bytes stop flowing both ways, connections stay open, as a partition looks) and
    `heal` opens again. The other watchers' paths are untouched."""

    def __init__(self, upstream: str, port: int) -> None:
        self.upstream = upstream
        self.port = port
        self.open = asyncio.Event()
        self.open.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self.open.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.open.wait()
        host, port = split_host_port(self.upstream)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(
                self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
            )
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self.open.wait()  # cut: hold the bytes, as a black hole would
            writer.write(data)
            await writer.drain()
        writer.close()
