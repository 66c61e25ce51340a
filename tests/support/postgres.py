"""Real PostgreSQL servers for tests: a primary and streaming replicas on loopback.

Started from the Debian binaries (/usr/lib/postgresql/15/bin) in a temporary directory
the `postgres` user owns, and run as that user through `runuser` when the tests run as
root (initdb refuses root). Never the package's own cluster on 5432: every server here
gets a free port and its own socket directory. Data checksums are on.

pg_hba: the unix socket trusts everyone; TCP from 127.0.0.1 needs the password
(`PASSWORD`), except replication connections, which are trusted (pg_basebackup and
streaming). So a test can reach the same server with and without credentials.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.services import free_port, need_binary

BINDIR = "/usr/lib/postgresql/15/bin"
PASSWORD = "drwatch-test-password"
HBA = """\
local all all trust
host replication all 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""
SERVER_OPTIONS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",  # tests never survive a power cut; a restart is clean or immediate
    "shared_buffers": "16MB",
    "max_connections": "30",
    "wal_keep_size": "64MB",
    "wal_receiver_status_interval": "1s",
    "log_min_messages": "warning",
}


def as_postgres() -> list[str]:
    """The prefix that runs a command as the `postgres` user (nothing when we are not root)."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def pg_binary(name: str) -> str:
    """A PostgreSQL 15 binary; skip (or fail under DRWATCH_REQUIRE_SERVICES=1) when absent."""
    path = Path(BINDIR) / name
    return str(path) if path.exists() else need_binary(name)


def run(argv: Sequence[str], timeout: float = 60.0) -> str:
    """Run a PostgreSQL tool as the postgres user; its output, or an error with stderr."""
    done = subprocess.run(
        [*as_postgres(), *argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


def owned_tempdir(prefix: str) -> Path:
    """A fresh directory the postgres user owns (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    return path


@dataclass
class Server:
    """One PostgreSQL server: its data directory, socket directory and loopback port."""

    data: Path
    port: int
    sockdir: Path
    log: Path
    replicas: list[Server] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)  # over SERVER_OPTIONS

    @property
    def dsn_socket(self) -> dict[str, object]:
        """Connection keywords over the unix socket (trusted: no password)."""
        return {"host": str(self.sockdir), "port": self.port, "user": "postgres"}

    def start(self) -> None:
        settings = {**SERVER_OPTIONS, **self.options}
        opts = " ".join(f"-c {k}={v}" for k, v in settings.items())
        opts += f" -p {self.port} -k {self.sockdir}"
        argv = [pg_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts]
        run([*argv, "-w", "-t", "60", "start"], timeout=90)
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            run([pg_binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], timeout=90)

    def sql(self, query: str, db: str = "postgres") -> str:
        """Run one query through psql over the socket; its unaligned, tuples-only output."""
        argv = [pg_binary("psql"), "-h", str(self.sockdir), "-p", str(self.port), "-U", "postgres"]
        argv += ["-d", db, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query]
        return run(argv, timeout=60).strip()

    def wait_ready(self, deadline_s: float = 30.0) -> None:
        """Until a real query succeeds (pg_ctl -w can return while a replica still starts)."""
        end = time.monotonic() + deadline_s
        while True:
            try:
                self.sql("SELECT 1")
                return
            except RuntimeError as err:
                if time.monotonic() > end:
                    raise TimeoutError(f"postgres on {self.port} not ready: {err}") from err
            time.sleep(0.1)

    def wait_streaming(self, deadline_s: float = 30.0) -> None:
        """Until this replica's WAL receiver streams."""
        end = time.monotonic() + deadline_s
        while self.sql("SELECT coalesce(max(status), '') FROM pg_stat_wal_receiver") != "streaming":
            if time.monotonic() > end:
                raise TimeoutError(f"replica on {self.port} is not streaming")
            time.sleep(0.1)

    def system_identifier(self) -> str:
        return self.sql("SELECT system_identifier FROM pg_control_system()")

    def corrupt_relation(self, relation: str, db: str = "postgres") -> Path:
        """Stop the server, flip bytes in the middle of the relation's first page on disk,
        start it again. Returns the file. Reading that page now fails its checksum."""
        self.sql("CHECKPOINT", db)
        path = self.data / self.sql(f"SELECT pg_relation_filepath('{relation}')", db)
        self.stop("fast")
        with path.open("r+b") as f:  # root may write the postgres user's file
            f.seek(4000)
            chunk = f.read(16)
            f.seek(4000)
            f.write(bytes(b ^ 0xFF for b in chunk))
        self.start()
        return path


def _initdb(root: Path) -> Path:
    data = root / "template"
    run([pg_binary("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
         "--data-checksums", "--no-sync"], timeout=120)  # fmt: skip
    (data / "pg_hba.conf").write_text(HBA)
    return data


class Clusters:
    """Makes servers under one owned directory; `close()` stops them all and removes it.

    `template()` is an initdb'd data directory made once; `primary()` copies it (so every
    primary shares its system identifier unless `fresh=True` runs initdb again).
    """

    def __init__(self) -> None:
        pg_binary("postgres")
        self.root = owned_tempdir("drwatch-pg-")
        self._template: Path | None = None
        self._servers: list[Server] = []
        self._count = 0

    def _new_dirs(self) -> tuple[Path, Path]:
        self._count += 1
        base = self.root / f"s{self._count}"
        run(["mkdir", "-p", str(base / "sock")])
        return base, base / "sock"

    def template(self) -> Path:
        if self._template is None:
            self._template = _initdb(self.root)
        return self._template

    def primary(
        self,
        *,
        fresh: bool = False,
        data: Path | None = None,
        options: dict[str, str] | None = None,
    ) -> Server:
        """A started primary. `data`: where its data directory goes (a directory the
        postgres user may create it in; e.g. a filesystem of its own); `options`: server
        settings over the defaults (e.g. fsync on, for a benchmark)."""
        base, sock = self._new_dirs()
        source = _initdb(base) if fresh else self.template()
        data = data or base / "data"
        run(["cp", "-a", str(source), str(data)])
        server = Server(
            data=data, port=free_port(), sockdir=sock, log=base / "log", options=options or {}
        )
        self._servers.append(server)
        server.start()
        server.sql(f"ALTER USER postgres PASSWORD '{PASSWORD}'")
        return server

    def replica(self, primary: Server, *, name: str = "") -> Server:
        """A streaming replica of `primary` (pg_basebackup -R), started and streaming."""
        base, sock = self._new_dirs()
        data = base / "data"
        argv = [pg_binary("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port)]
        argv += ["-U", "postgres", "-D", str(data), "-R", "-X", "stream", "-c", "fast"]
        run(argv, timeout=120)
        if name:
            conf = data / "postgresql.auto.conf"
            run(["sh", "-c", f"echo \"cluster_name = '{name}'\" >> {conf}"])
        server = Server(data=data, port=free_port(), sockdir=sock, log=base / "log")
        self._servers.append(server)
        server.start()
        server.wait_streaming()
        primary.replicas.append(server)
        return server

    def stop_all(self) -> None:
        """Stop every server started so far (their directories stay until `close`)."""
        for server in reversed(self._servers):
            with suppress(RuntimeError, subprocess.TimeoutExpired):
                server.stop("immediate")
        self._servers.clear()

    def close(self) -> None:
        self.stop_all()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def loop_filesystem(size_mb: int = 512) -> Iterator[Path | None]:
    """A filesystem of its own, owned by postgres: an ext4 image on a loop device,
    mounted for the block, so `fsfreeze` on it freezes nothing else on the machine.
    None when this process may not mount one (not root, no loop devices)."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="drwatch-loopfs-"))
    root.chmod(0o755)  # the postgres user walks through it to its data directory
    image, mount = root / "fs.img", root / "mnt"
    mount.mkdir()
    mounted = False
    try:
        subprocess.run(["truncate", "-s", f"{size_mb}M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
        done = subprocess.run(
            ["mount", "-o", "loop", str(image), str(mount)], check=False, capture_output=True
        )
        if done.returncode != 0:
            yield None
            return
        mounted = True
        shutil.chown(mount, "postgres", "postgres")
        yield mount
    finally:
        if mounted:
            subprocess.run(["fsfreeze", "--unfreeze", str(mount)], check=False, capture_output=True)
            subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def clusters() -> Iterator[Clusters]:
    made = Clusters()
    try:
        yield made
    finally:
        made.close()
