"""One PostgreSQL cluster from the machine's binaries, on loopback, for the sandbox and tests.

`PgCluster(data_dir, port)` wraps the Debian PostgreSQL 15 binaries: `initdb` (data
checksums on), start and stop (`fast` or `immediate`), `pg_basebackup -R` for a streaming
replica, promotion, a copy of the data directory as a snapshot, and on-disk corruption of
a data page. Everything runs as the `postgres` user when we are root (initdb refuses
root), listens on 127.0.0.1 only with its socket in a directory of its own, and never
touches the package's own cluster on 5432.

The calls block (they run the binaries and wait, each with a deadline): asyncio callers
wrap them in `asyncio.to_thread`. Queries go through `psql` over TCP, so this module
needs no database driver. Errors are `PgError` with the tool's own words.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"
HOST = "127.0.0.1"
PAGE_SIZE = 8192
# A unix socket path must fit in 107 bytes; longer data dirs get a socket dir in /tmp.
_SOCKET_PATH_MAX = 90

_IDENT = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?")

StopMode = Literal["smart", "fast", "immediate"]

# Written into postgresql.conf at initdb, so copies and replicas carry them. Small and
# quick: the sandbox runs three of these on a shared 2-core machine.
SETTINGS = {
    "shared_buffers": "16MB",
    "max_connections": "30",
    "wal_level": "replica",
    "max_wal_senders": "6",
    "wal_keep_size": "128MB",
    "hot_standby": "on",
    "hot_standby_feedback": "on",
    "fsync": "off",  # the machine never crashes under a sandbox; processes do
    "synchronous_commit": "on",
    "checkpoint_timeout": "5min",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


class PgError(RuntimeError):
    """A PostgreSQL tool or query failed; the message carries its own words."""


def pg_bin_dir() -> Path | None:
    """Where the PostgreSQL 15 binaries are, or None when they are not installed."""
    return PG_BIN if (PG_BIN / "postgres").exists() else None


def _as_postgres() -> list[str]:
    """The prefix that runs a tool as the `postgres` user (only needed as root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_USER, "--"]
    return []


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, PG_USER, PG_USER)


def _open_ancestors(path: Path) -> None:
    """Let the postgres user walk down to `path`: add search (x, never read) permission on
    every ancestor we own that lacks it (pytest's and mkdtemp's dirs are 0700)."""
    if os.geteuid() != 0:
        return
    for parent in reversed(path.resolve().parents):
        st = parent.stat()
        if st.st_uid == 0 and not st.st_mode & 0o001:
            parent.chmod(st.st_mode | 0o011)


def _run(argv: Sequence[str], *, timeout_s: float, what: str) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - argv is ours, no shell
            list(argv), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise PgError(f"{what}: no answer within {timeout_s:g}s") from None
    except OSError as err:
        raise PgError(f"{what}: {err}") from None
    if done.returncode != 0:
        words = (done.stderr or done.stdout).strip().splitlines()
        raise PgError(f"{what}: {' / '.join(words[-3:]) or f'exit {done.returncode}'}")
    return done.stdout


def reachable_by_postgres(path: Path) -> bool:
    """Whether the postgres user can walk down to `path` now (always true when we are not
    root: then the servers run as us). A 0700 directory on the way says no."""
    if os.geteuid() != 0:
        return True
    resolved = path.resolve()
    for d in [*reversed(resolved.parents), resolved]:
        try:
            st = d.stat()
        except FileNotFoundError:
            break
        if not st.st_mode & 0o001 and st.st_uid != _pg_ids()[0]:
            return False
    return True


def scratch_dir(prefix: str = "drwatch-pg-") -> Path:
    """A new directory in the system's temp dir that the postgres user can reach (0711).

    For data that must not depend on its parents' modes: pytest resets
    /tmp/pytest-of-USER to 0700 whenever a new session starts, which cuts a server off
    from a data directory under it in the middle of a run. The caller removes it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


def make_data_dir(path: Path) -> None:
    """An empty directory the postgres user owns with mode 0700, as initdb wants it."""
    path.mkdir(parents=True, exist_ok=True)
    _open_ancestors(path)
    _chown_to_postgres(path)
    path.chmod(0o700)


@dataclass(frozen=True)
class Integrity:
    """What the cluster says about its data: checksums on, failures seen, a probe read."""

    checksums: bool
    checksum_failures: int
    probe_error: str | None  # reading the probe relation failed: why

    @property
    def ok(self) -> bool:
        return self.checksum_failures == 0 and self.probe_error is None


class PgCluster:
    """One cluster: a data directory and the port it listens on (127.0.0.1 only)."""

    def __init__(self, data_dir: Path, port: int, *, bin_dir: Path = PG_BIN) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.bin_dir = bin_dir
        self._socket_dir: Path | None = None
        self._pid: int | None = None  # the postmaster this object started

    def __repr__(self) -> str:
        return f"PgCluster({str(self.data_dir)!r}, port={self.port})"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def _tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    # --- creating clusters --------------------------------------------------------------------

    def initdb(self, *, timeout_s: float = 60.0) -> None:
        """A new cluster with data checksums on, trust auth on loopback, user `postgres`."""
        make_data_dir(self.data_dir)
        argv = [self._tool("initdb"), "-D", str(self.data_dir), "-A", "trust", "-U", PG_USER]
        _run(
            [*_as_postgres(), *argv, "--data-checksums", "--no-sync", "-E", "UTF8"],
            timeout_s=timeout_s,
            what="initdb",
        )
        lines = "".join(f"{k} = '{v}'\n" for k, v in SETTINGS.items())
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# drwatch sandbox\n" + lines)

    @classmethod
    def replica_of(
        cls, primary: PgCluster, data_dir: Path, port: int, *, timeout_s: float = 60.0
    ) -> PgCluster:
        """A streaming replica: `pg_basebackup -R -X stream` of a running `primary`."""
        replica = cls(data_dir, port, bin_dir=primary.bin_dir)
        replica._base_backup(primary, standby=True, timeout_s=timeout_s)
        return replica

    def _base_backup(self, source: PgCluster, *, standby: bool, timeout_s: float) -> None:
        make_data_dir(self.data_dir)
        argv = [
            self._tool("pg_basebackup"),
            *("-h", HOST, "-p", str(source.port), "-U", PG_USER),
            *("-D", str(self.data_dir), "-X", "stream", "-c", "fast", "--no-sync"),
            # A copy keeps a damaged page as it is, as a block-level snapshot would.
            "--no-verify-checksums",
        ]
        if standby:
            argv.append("-R")
        _run([*_as_postgres(), *argv], timeout_s=timeout_s, what="pg_basebackup")
        (self.data_dir / "server.log").unlink(missing_ok=True)

    def snapshot_to(self, dest: Path, *, timeout_s: float = 60.0) -> PgCluster:
        """A copy of this cluster's data as of now, at `dest` (not started; port 0).

        A running cluster is copied with a base backup (consistent; it starts as a
        primary after recovery); a stopped or crashed one by copying its files, as a
        volume snapshot would (PostgreSQL recovers it like after a crash).
        """
        copy = PgCluster(dest, 0, bin_dir=self.bin_dir)
        if self.running():
            copy._base_backup(self, standby=False, timeout_s=timeout_s)
        else:
            copy_data_dir(self.data_dir, dest)
        return copy

    # --- running ------------------------------------------------------------------------------

    def socket_dir(self) -> Path:
        if self._socket_dir is None:
            if len(str(self.data_dir)) < _SOCKET_PATH_MAX:
                self._socket_dir = self.data_dir
            else:
                self._socket_dir = Path(tempfile.mkdtemp(prefix="drwatch-pgsock-"))
                _open_ancestors(self._socket_dir)
                _chown_to_postgres(self._socket_dir)
        return self._socket_dir

    def start(self, *, timeout_s: float = 30.0) -> None:
        """Start on `port` and wait until a query succeeds (a replica: until it answers)."""
        if self.port <= 0:
            raise PgError(f"{self}: no port to listen on")
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        opts = f"-c listen_addresses={HOST} -c port={self.port} -k {self.socket_dir()}"
        argv = [self._tool("pg_ctl"), "start", "-D", str(self.data_dir), "-l", str(self.log_file)]
        try:
            _run(
                [*_as_postgres(), *argv, "-w", "-t", str(int(timeout_s)), "-o", opts],
                timeout_s=timeout_s + 5,
                what=f"start {self.data_dir.name}",
            )
        except PgError as err:
            raise PgError(f"{err}; its log says: {self._log_tail()}") from None
        self._pid = self._pid_from_file()
        self.wait_ready(timeout_s=timeout_s)

    def _log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError as err:
            return f"(no log: {err})"
        return " / ".join(text.strip().splitlines()[-lines:]) or "(empty)"

    def stop(self, mode: StopMode = "fast", *, timeout_s: float = 30.0) -> None:
        """Stop the server; a cluster that is not running is already stopped. A server
        whose data directory was removed under it gets SIGQUIT (immediate shutdown)."""
        if not self.running():
            return
        if self._pid_from_file() is None and self._pid is not None:
            _signal_postmaster(self._pid, timeout_s)
        else:
            argv = [self._tool("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", mode, "-w"]
            _run(
                [*_as_postgres(), *argv, "-t", str(int(timeout_s))],
                timeout_s=timeout_s + 5,
                what=f"stop {self.data_dir.name}",
            )
        self._pid = None
        if self._socket_dir is not None and self._socket_dir != self.data_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)  # our own, in /tmp
            self._socket_dir = None

    def restart(self, *, timeout_s: float = 30.0) -> None:
        self.stop("fast", timeout_s=timeout_s)
        self.start(timeout_s=timeout_s)

    def running(self) -> bool:
        """A postmaster runs on this data directory: its pid file names a live process,
        or the one this object started still lives."""
        pid = self._pid_from_file() or self._pid
        return pid is not None and _alive(pid)

    def _pid_from_file(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def wait_ready(self, *, timeout_s: float = 30.0) -> None:
        """Wait until `SELECT 1` succeeds, or raise PgError after the deadline."""
        end = time.monotonic() + timeout_s
        while True:
            try:
                self.sql("SELECT 1", timeout_s=2.0)
                return
            except PgError as err:
                if time.monotonic() > end:
                    raise PgError(f"{self} not ready within {timeout_s:g}s: {err}") from None
            time.sleep(0.1)

    # --- asking it ----------------------------------------------------------------------------

    def sql(self, query: str, *, db: str = "postgres", timeout_s: float = 10.0) -> str:
        """Run `query` with psql over TCP; the unaligned, tuples-only output, stripped."""
        argv = [
            self._tool("psql"),
            *("-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"),
            *("-h", HOST, "-p", str(self.port), "-U", PG_USER, "-d", db, "-c", query),
        ]
        # psql needs no special user: trust on loopback.
        return _run(argv, timeout_s=timeout_s, what=f"psql {self.port}").strip()

    def in_recovery(self) -> bool:
        return self.sql("SELECT pg_is_in_recovery()") == "t"

    def promote(self, *, timeout_s: float = 30.0) -> str:
        """Promote a replica; returns the previous role (`replica` or `primary`)."""
        if not self.in_recovery():
            return "primary"
        secs = max(1, int(timeout_s))
        done = self.sql(
            f"SELECT pg_promote(wait => true, wait_seconds => {secs})", timeout_s=timeout_s + 5
        )
        if done != "t":
            raise PgError(f"{self}: pg_promote did not finish within {secs}s")
        return "replica"

    def system_identifier(self) -> str:
        return self.sql("SELECT system_identifier FROM pg_control_system()")

    def integrity(self, probe: str | None = None, *, db: str = "postgres") -> Integrity:
        """Checksums on, checksum failures counted so far, and whether reading every
        block of the `probe` relation (when given) succeeds."""
        checksums = self.sql("SHOW data_checksums") == "on"
        probe_error = None
        if probe is not None:
            try:
                self.sql(f"SELECT count(*) FROM {_identifier(probe)}", db=db)  # noqa: S608
            except PgError as err:
                probe_error = str(err)
        failures = self.sql("SELECT coalesce(sum(checksum_failures), 0) FROM pg_stat_database")
        return Integrity(checksums, int(failures or 0), probe_error)

    def relation_file(self, relation: str, *, db: str = "postgres") -> Path:
        """The file holding `relation`'s first segment (the cluster must be running)."""
        rel = self.sql(f"SELECT pg_relation_filepath('{_identifier(relation)}')", db=db)
        if not rel:
            raise PgError(f"{self}: no relation {relation!r}")
        return self.data_dir / rel

    # --- damage ---------------------------------------------------------------------------

    def corrupt_page(self, relation: str, *, block: int = 0, db: str = "postgres") -> Path:
        """Flip bytes in the middle of one data page of `relation`, on disk.

        The cluster must be running (to find the file). A CHECKPOINT first writes every
        dirty page, so the damage stays on disk; the running server sees it when it next
        reads that block from disk (after a restart, or when the buffer is evicted), as
        with real latent corruption. Returns the file that was damaged.
        """
        path = self.relation_file(relation, db=db)
        self.sql("CHECKPOINT", timeout_s=30.0)
        corrupt_file_page(path, block)
        return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_postmaster(pid: int, timeout_s: float) -> None:
    """SIGQUIT (immediate shutdown) to a postmaster, then wait until it is gone."""
    try:
        os.kill(pid, signal.SIGQUIT)
    except ProcessLookupError:
        return
    end = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > end:
            raise PgError(f"postmaster {pid} still runs {timeout_s:g}s after SIGQUIT")
        time.sleep(0.05)


def _identifier(name: str) -> str:
    """`name` when it is a plain (optionally schema-qualified) identifier; else PgError."""
    if not _IDENT.fullmatch(name):
        raise PgError(f"not a plain relation name: {name!r}")
    return name


def corrupt_file_page(path: Path, block: int = 0) -> None:
    """Invert 64 bytes in the middle of page `block` of a relation file."""
    offset = block * PAGE_SIZE + PAGE_SIZE // 2
    with path.open("r+b") as f:
        f.seek(offset)
        data = f.read(64)
        if len(data) < 64:
            raise PgError(f"{path}: no page {block}")
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


def copy_data_dir(src: Path, dest: Path) -> None:
    """Copy a (stopped) data directory with owners and modes, minus its pid file and log."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _open_ancestors(dest.parent)
    shutil.copytree(src, dest, symlinks=True, copy_function=shutil.copy2)
    _chown_tree(dest)
    dest.chmod(0o700)
    (dest / "postmaster.pid").unlink(missing_ok=True)
    (dest / "server.log").unlink(missing_ok=True)


def _chown_tree(root: Path) -> None:
    if os.geteuid() != 0:
        return
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), *_pg_ids(), follow_symlinks=False)
    os.chown(root, *_pg_ids())


def _pg_ids() -> tuple[int, int]:
    import pwd  # noqa: PLC0415 - POSIX only, and only as root

    entry = pwd.getpwnam(PG_USER)
    return entry.pw_uid, entry.pw_gid
