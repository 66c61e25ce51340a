"""A real etcd (Debian `etcd-server`) on loopback with a temp data dir, for cluster tests.

`etcd_server(tmp)` starts one member and waits for `/health` to say true; the handle can
kill it (`kill -9`), start it again on the same port and data (an etcd outage and its
end), and pause it (SIGSTOP: a member that stops answering without closing sockets).
Skips with a reason when etcd is not installed; fails under DRWATCH_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
import random
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from drwatch.cluster.errors import EtcdUnavailableError, NotLeaderError
from drwatch.cluster.etcd import Etcd
from drwatch.cluster.etcd_store import EtcdJournalStore
from drwatch.cluster.leader import Election, Fence
from drwatch.config import ClusterConfig
from tests.support.services import free_port, need_binary


@dataclass
class EtcdServer:
    """One etcd member on 127.0.0.1. `endpoint` is host:port for drwatch's config."""

    binary: str
    data_dir: Path
    client_port: int
    peer_port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    tls: TlsDir | None = None
    name: str = "drwatch-test"
    # Every member's name=peer URL, for a member of a cluster; None: a cluster of one.
    initial_cluster: str | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self, deadline_s: float = 20.0) -> None:
        self.launch()
        self.wait_healthy(deadline_s)

    def launch(self) -> None:
        """Start the process; a cluster's members are launched first, then awaited."""
        scheme = "https" if self.tls else "http"
        client = f"{scheme}://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        tls_flags = []
        if self.tls is not None:
            t = self.tls
            tls_flags = [
                f"--cert-file={t.server_cert}",
                f"--key-file={t.server_key}",
                f"--trusted-ca-file={t.ca}",
                "--client-cert-auth",
            ]
        log = (self.data_dir.parent / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--name={self.name}",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster={self.initial_cluster or f'{self.name}={peer}'}",
                "--log-level=error",
                "--logger=zap",
                *tls_flags,
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()

    def wait_healthy(self, deadline_s: float) -> None:
        """Until `/health` answers 200 with `"health": "true"` (a member with a leader)."""
        scheme = "https" if self.tls else "http"
        url = f"{scheme}://127.0.0.1:{self.client_port}/health"
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
            context.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        end = time.monotonic() + deadline_s
        last = "no answer"
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}: see {self.name}.log")
            try:
                with urllib.request.urlopen(url, timeout=1, context=context) as resp:
                    body = json.loads(resp.read())
                    if resp.status == 200 and body.get("health") == "true":
                        return
                    last = f"HTTP {resp.status} {body}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (OSError, ValueError) as exc:
                last = str(exc)
            if time.monotonic() > end:
                raise TimeoutError(f"etcd was not healthy within {deadline_s}s (last: {last})")
            time.sleep(0.05)

    def kill(self) -> None:
        """kill -9: etcd stops answering at once (connections are reset)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: etcd stops answering, but its sockets stay open (calls time out)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass(frozen=True)
class TlsDir:
    """A throwaway CA, a server pair for 127.0.0.1 and a client pair, made with openssl."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls(tmp: Path) -> TlsDir:
    openssl = need_binary("openssl")
    d = tmp / "tls"
    d.mkdir()

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)

    new_key = ["-newkey", "rsa:2048", "-nodes"]
    run("req", "-x509", *new_key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=drwatch-test-ca")  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (d / f"{name}.ext").write_text(ext + "\n")
        run("req", *new_key, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=drwatch-test-{name}")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
            "-extfile", f"{name}.ext")  # fmt: skip
    return TlsDir(
        d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key"
    )


@contextmanager
def etcd_cluster(tmp: Path, size: int = 3) -> Iterator[list[EtcdServer]]:
    """`size` etcd members on loopback forming one cluster, stopped afterwards."""
    binary = need_binary("etcd")
    members = [
        EtcdServer(binary, tmp / f"m{i}-data", free_port(), free_port(), name=f"m{i}")
        for i in range(size)
    ]
    everyone = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in members)
    try:
        for m in members:
            m.initial_cluster = everyone
            m.launch()
        for m in members:
            m.wait_healthy(30.0)
        yield members
    finally:
        for m in members:
            m.stop()


@contextmanager
def etcd_server(tmp: Path, *, tls: bool = False) -> Iterator[EtcdServer]:
    """A fresh single-member etcd in `tmp`, stopped afterwards. With `tls`, it serves
    HTTPS with a throwaway CA and requires a client certificate."""
    server = EtcdServer(
        binary=need_binary("etcd"),
        data_dir=tmp / "etcd-data",
        client_port=free_port(),
        peer_port=free_port(),
        tls=make_tls(tmp) if tls else None,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def until(condition: Callable[[], bool], deadline_s: float) -> None:
    """Poll `condition` every 20 ms until it holds; TimeoutError after the deadline."""
    async with asyncio.timeout(deadline_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


# -- a watcher in its own process: killed with -9 or SIGSTOPped by the cluster tests --------


def member_config(endpoint: str, name: str, ttl: int = 3) -> ClusterConfig:
    """Short timings for tests: lease 3 s, keepalive 1 s, acting window 2.5 s."""
    return ClusterConfig(
        name=name,
        endpoints=[endpoint],
        namespace="drwatch-test",
        lease_ttl=ttl,
        keepalive_interval=1.0,
        request_timeout=0.5,
        safety_margin=0.5,
    )


async def _member(endpoint: str, name: str) -> None:
    """Campaign; once leader, print `leader TERM` and keep the fence it was given. Each
    `write KEY` line on stdin then journals an effect intent with that fence, as a leader
    that checked it leads and was then paused would: prints `written` or `refused ...`."""
    # stdout carries the protocol lines only; logs go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    cfg = member_config(endpoint, name)
    etcd = Etcd(cfg.endpoints, timeout=cfg.request_timeout)
    election = Election(etcd, cfg)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(election.run())
        await until(lambda: election.state.acting, 30.0)
        fence = election.fence()
        journal = EtcdJournalStore(etcd, cfg.namespace, lambda: fence)
        print(f"leader {fence.revision}", flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):
            key = line.split()[1]
            try:
                await journal.effect_intent("run-1", "step", key, params={}, owner=name, now=0.0)
                print("written", flush=True)
            except NotLeaderError as exc:
                print(f"refused {exc}", flush=True)


@dataclass
class Member:
    """A watcher process (see `_member`): its lines arrive on a queue a thread fills."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    pump: threading.Thread | None = None

    def line(self, deadline_s: float) -> str:
        """The next stdout line, or TimeoutError after the deadline."""
        try:
            return self.lines.get(timeout=deadline_s)
        except queue.Empty:
            raise TimeoutError(f"no line from the member within {deadline_s}s") from None

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.pump is not None:
            self.pump.join(timeout=10)  # ends at EOF, now the process is gone
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@contextmanager
def member(endpoint: str, name: str, *, writer: bool = False) -> Iterator[Member]:
    """`_member` (answers `write KEY` on stdin), or `_writer` when `writer`."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.etcd",
            endpoint,
            name,
            *(["writer"] if writer else []),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).parents[2],
        start_new_session=True,
    )
    m = Member(proc)
    assert proc.stdout is not None
    out = proc.stdout

    def pump() -> None:
        for line in out:
            m.lines.put(line.strip())

    m.pump = threading.Thread(target=pump, daemon=True)
    m.pump.start()
    try:
        yield m
    finally:
        m.stop()


def _held(fence: Fence) -> Callable[[], Fence]:
    """The fence as checked earlier: what a writer that was paused since then still holds."""
    return lambda: fence


async def _writer(endpoint: str, name: str) -> None:
    """A watcher that, whenever it leads, journals effect after effect: check the fence,
    wait up to 200 ms (a window for a SIGSTOP to fall into, as a GC pause would), then
    write with the fence it checked. Prints `written TERM`, `refused TERM` or `unavailable`
    per attempt; the Jepsen-style test reads etcd afterwards, not these lines."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    cfg = member_config(endpoint, name)
    etcd = Etcd(cfg.endpoints, timeout=cfg.request_timeout)
    election = Election(etcd, cfg)
    rng = random.Random(os.getpid())
    async with asyncio.TaskGroup() as tg:
        tg.create_task(election.run())
        for n in itertools.count():
            await asyncio.sleep(0.02)
            try:
                fence = election.fence()
            except NotLeaderError:
                continue
            await asyncio.sleep(rng.uniform(0, 0.2))
            journal = EtcdJournalStore(etcd, cfg.namespace, _held(fence))
            key = f"{name}-{os.getpid()}-{n}"
            try:
                await journal.effect_intent(
                    "jepsen", f"term-{fence.revision}", key, params={}, owner=name, now=time.time()
                )
                print(f"written {fence.revision}", flush=True)
            except NotLeaderError:
                print(f"refused {fence.revision}", flush=True)
            except EtcdUnavailableError:
                print("unavailable", flush=True)


if __name__ == "__main__":
    main = _writer if sys.argv[3:] == ["writer"] else _member
    asyncio.run(main(sys.argv[1], sys.argv[2]))


class Blackhole:
    """A TCP proxy on loopback in front of etcd, for one watcher: `cut()` makes it a
    black hole (bytes are swallowed, connections stay open, calls time out), as a
    network partition does; `heal()` forwards again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.cut_off = False
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    def cut(self) -> None:
        self.cut_off = True

    def heal(self) -> None:
        self.cut_off = False

    async def close(self) -> None:
        for t in self._pipes:
            t.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        for src, dst in ((reader, up_w), (up_r, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if not self.cut_off:
                    dst.write(data)
                    await dst.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.close()
