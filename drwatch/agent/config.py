"""The agent's own configuration (TOML), validated whole at load.

`load(path)` returns a frozen `AgentConfig` or raises `ConfigError` listing every
problem with its dotted path (`checks[2].url: required key is missing`).
The agent shares nothing with the daemon's config: they run on different hosts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from drwatch.agent import keycheck
from drwatch.backup.config import (
    DEFAULT_CHUNK,
    MIB,
    S3_MAX_OBJECT,
    Compression,
    Fingerprint,
    Location,
)
from drwatch.errors import ConfigError
from drwatch.fields import Duration, HostPort, split_host_port
from drwatch.tomlconfig import read_toml, validate
from drwatch.units import format_duration

Percent = Annotated[float, Field(ge=0, le=100)]
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_PARAM = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# As `drwatch.agent.wire.valid_target`: it goes into the signed canonical string.
_INSTANCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_CHECKS = 64
MAX_ACTIONS = 32


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: lower-case letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 63 characters"
        )
    return value


def _check_param(value: str) -> str:
    if not _PARAM.match(value):
        raise ValueError(f"{value!r} is not a parameter name: [a-z][a-z0-9_]*, at most 32")
    return value


def _check_instance_id(value: str) -> str:
    if not _INSTANCE_ID.match(value):
        raise ValueError(
            f"{value[:64]!r} is not an instance id: 1-128 of letters, digits, '.', '_', ':', '-'"
        )
    return value


Name = Annotated[str, AfterValidator(_check_name)]
InstanceId = Annotated[str, AfterValidator(_check_instance_id)]
ParamName = Annotated[str, AfterValidator(_check_param)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _thresholds_ordered(warning: float | None, critical: float | None, what: str) -> None:
    """For "higher is worse" values: warning must come before critical."""
    if warning is not None and critical is not None and warning > critical:
        raise ValueError(f"warning_{what} must not be above critical_{what}")


class HttpCheckConfig(_Strict):
    """GET a URL on this host: critical on a connection error or an unexpected status."""

    kind: Literal["http"]
    name: Name
    url: str
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200]
    )
    warning_latency: Duration | None = None
    critical_latency: Duration | None = None

    @model_validator(mode="after")
    def _valid(self) -> Self:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https:// (got {self.url!r})")
        _thresholds_ordered(self.warning_latency, self.critical_latency, "latency")
        return self


class TcpCheckConfig(_Strict):
    """Connect to host:port: critical when the connection is refused or fails."""

    kind: Literal["tcp"]
    name: Name
    address: HostPort
    warning_latency: Duration | None = None
    critical_latency: Duration | None = None

    @model_validator(mode="after")
    def _valid(self) -> Self:
        _thresholds_ordered(self.warning_latency, self.critical_latency, "latency")
        return self


class ProcessCheckConfig(_Strict):
    """Count processes with this exact name: critical below `min_count`."""

    kind: Literal["process"]
    name: Name
    process: str = Field(min_length=1)
    min_count: Annotated[int, Field(ge=1)] = 1


class DiskFreeCheckConfig(_Strict):
    """Free space on the filesystem holding `path`, as a percentage: lower is worse."""

    kind: Literal["disk_free"]
    name: Name
    path: Path
    warning_free_percent: Percent = 20.0
    critical_free_percent: Percent = 10.0

    @model_validator(mode="after")
    def _valid(self) -> Self:
        if self.critical_free_percent > self.warning_free_percent:
            raise ValueError("critical_free_percent must not be above warning_free_percent")
        return self


class PostgresCheckConfig(_Strict):
    """The local PostgreSQL server (connection in `[postgres]`): role, lag, integrity.

    Lag thresholds are "higher is worse"; the byte thresholds are off unless set.
    `amcheck_interval` 0 turns the background index sweep off.
    """

    kind: Literal["postgres"]
    name: Name
    warning_lag: Duration = 30.0
    critical_lag: Duration = 300.0
    warning_lag_bytes: Annotated[int, Field(ge=0)] | None = None
    critical_lag_bytes: Annotated[int, Field(ge=0)] | None = None
    # The cluster this host must belong to (SELECT system_identifier FROM pg_control_system()).
    expect_system_identifier: Annotated[str, Field(pattern=r"^[0-9]{1,20}$")] | None = None
    require_data_checksums: bool = True
    amcheck_interval: Duration = 3600.0
    amcheck_max_indexes: Annotated[int, Field(ge=1, le=100_000)] = 200
    amcheck_budget: Duration = 60.0

    @model_validator(mode="after")
    def _valid(self) -> Self:
        _thresholds_ordered(self.warning_lag, self.critical_lag, "lag")
        _thresholds_ordered(self.warning_lag_bytes, self.critical_lag_bytes, "lag_bytes")
        if self.amcheck_interval and self.amcheck_interval < 60.0:
            raise ValueError("amcheck_interval must be 0 (off) or at least 1m")
        if self.amcheck_budget <= 0:
            raise ValueError("amcheck_budget must be greater than 0")
        return self


CheckConfig = Annotated[
    HttpCheckConfig
    | TcpCheckConfig
    | ProcessCheckConfig
    | DiskFreeCheckConfig
    | PostgresCheckConfig,
    Field(discriminator="kind"),
]
CHECK_KINDS = frozenset({"http", "tcp", "process", "disk_free", "postgres"})
DATABASE_ACTIONS = ("promote", "follow", "freeze", "thaw")


class PostgresConfig(_Strict):
    """How the agent reaches the local PostgreSQL server, and its built-in database actions.

    `host` is a socket directory (an absolute path) or an address; loopback or the socket
    only: the agent speaks for its own host. `actions` enables built-in actions by name.
    """

    host: str = "/var/run/postgresql"
    port: Annotated[int, Field(ge=1, le=65535)] = 5432
    user: str = Field(default="postgres", min_length=1, max_length=63)
    database: str = Field(default="postgres", min_length=1, max_length=63)
    password_file: Path | None = None
    connect_timeout: Duration = 1.0
    # "restore": `POST /v1/restore` and `restore_status` (the ladder's restore_from_dump).
    actions: list[Literal["promote", "follow", "freeze", "thaw", "restore"]] = Field(
        default_factory=list
    )
    promote_timeout: Duration = 60.0
    follow_timeout: Duration = 30.0
    max_freeze: Duration = 10.0
    # Optional filesystem freeze of the data mount while frozen (the agent must be root).
    fsfreeze_mount: Path | None = None
    fsfreeze_binary: Path = Path("/usr/sbin/fsfreeze")
    # A restored dump: pg_restore from here; at most this many bytes, within this time.
    bin_dir: Path = Path("/usr/lib/postgresql/15/bin")
    restore_max_bytes: Annotated[int, Field(ge=1, le=1 << 50)] = 1 << 40
    restore_timeout: Duration = 6 * 3600.0

    @model_validator(mode="after")
    def _valid(self) -> Self:
        problems = []
        if not (self.host.startswith("/") or self.host in {"127.0.0.1", "::1", "localhost"}):
            problems.append(f"host must be a socket directory or loopback (got {self.host!r})")
        for key in ("connect_timeout", "promote_timeout", "follow_timeout", "restore_timeout"):
            if getattr(self, key) <= 0:
                problems.append(f"{key} must be greater than 0")
        if not 1.0 <= self.max_freeze <= 300.0:
            problems.append(f"max_freeze ({format_duration(self.max_freeze)}) must be 1s to 5m")
        for path in (self.fsfreeze_mount, self.fsfreeze_binary):
            if path is not None and not path.is_absolute():
                problems.append(f"{path} must be an absolute path")
        if len(set(self.actions)) != len(self.actions):
            problems.append("actions: a name is listed more than once")
        if problems:
            raise ValueError("\n".join(problems))
        return self


class CommandActionConfig(_Strict):
    """An allow-listed action: a fixed argv, run without a shell.

    The caller chooses only the values of the named `params`; they reach the command as
    environment variables `DRWATCH_PARAM_<NAME>`, never as arguments or shell text.
    """

    name: Name
    argv: list[str] = Field(min_length=1)
    params: list[ParamName] = Field(default_factory=list)
    timeout: Duration = 30.0

    @model_validator(mode="after")
    def _valid(self) -> Self:
        if not Path(self.argv[0]).is_absolute():
            raise ValueError(f"argv[0] must be an absolute path (got {self.argv[0]!r})")
        if self.timeout <= 0:
            raise ValueError("timeout must be greater than 0")
        return self


class AgentBackupConfig(_Strict):
    """Backups taken on this host by the `backup` action (docs/backups.md): the primary
    backup bucket with this host's write-only credentials, and the recipient's public
    key. Never a private key (check-config refuses one anywhere in this file)."""

    location: Location
    public_key_file: Path
    fingerprint: Fingerprint
    gpg_binary: str = "gpg"
    # Scratch home for gpg's key check; no keyring is kept there.
    gnupg_home: Path = Path("/var/lib/drwatch-agent/gnupg")
    compression: Compression = "none"
    chunk_size: Annotated[int, Field(ge=5 * MIB, le=S3_MAX_OBJECT)] = DEFAULT_CHUNK
    # A database host dumps its local server ([postgres]); a dump is refused on a primary.
    dump: bool = False
    # Absolute paths archived by `config_archive` (tar, gzip), if any.
    archive_paths: list[str] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _valid(self) -> Self:
        relative = [p for p in self.archive_paths if not p.startswith("/")]
        if relative:
            raise ValueError(f"archive_paths must be absolute (got {', '.join(relative)})")
        if not self.dump and not self.archive_paths:
            raise ValueError("set dump = true, archive_paths, or both (else nothing is backed up)")
        return self


class AgentConfig(_Strict):
    """The whole agent configuration."""

    # Loopback by default: set the host's private address to let the watcher in.
    listen: HostPort = "127.0.0.1:9180"
    secret_file: Path
    # Who this agent is (exactly one of the two): requests signed for another instance
    # are refused. cloud-init writes the id to /var/lib/cloud/data/instance-id.
    instance_id: InstanceId | None = None
    instance_id_file: Path | None = None
    # HTTPS: the certificate (chain) and its private key, both or neither (docs/agent.md).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Also accept protocol v1 requests (no target, unsigned answers): only while a
    # watcher older than v2 is being upgraded. Logged at start and on every v1 request.
    accept_v1: bool = False
    # A request whose timestamp is further than this from the agent's clock is refused.
    max_clock_skew: Duration = 30.0
    max_request_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 64 * 1024
    max_response_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 256 * 1024
    # Each local check gets this long; keep it below the daemon's timing.agent.timeout.
    check_timeout: Duration = 1.0
    # Mount points to report; empty: every physical filesystem psutil lists.
    mounts: list[str] = Field(default_factory=list)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    checks: list[CheckConfig] = Field(default_factory=list, max_length=MAX_CHECKS)
    actions: list[CommandActionConfig] = Field(default_factory=list, max_length=MAX_ACTIONS)
    # The local PostgreSQL server: needed by a `postgres` check and the database actions.
    postgres: PostgresConfig | None = None
    # Backups taken here, encrypted here, uploaded with write-only credentials.
    backup: AgentBackupConfig | None = None

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        problems: list[str] = self._postgres_problems()
        if not 1.0 <= self.max_clock_skew <= 300.0:
            problems.append(
                f"max_clock_skew ({format_duration(self.max_clock_skew)}) must be between 1s and 5m"
            )
        if self.check_timeout <= 0:
            problems.append("check_timeout must be greater than 0")
        problems += self._transport_problems()
        for what, names in (
            ("checks", [c.name for c in self.checks]),
            ("actions", [a.name for a in self.actions]),
        ):
            for dup in sorted({n for n in names if names.count(n) > 1}):
                problems.append(f"{what}: the name {dup!r} is used more than once")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _transport_problems(self) -> list[str]:
        problems = []
        if (self.instance_id is None) == (self.instance_id_file is None):
            problems.append(
                "set exactly one of instance_id and instance_id_file: the agent refuses "
                "requests signed for another instance, so it must know its own id "
                '(e.g. instance_id_file = "/var/lib/cloud/data/instance-id")'
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            problems.append("tls_cert_file and tls_key_file go together: set both or neither")
        return problems

    def _postgres_problems(self) -> list[str]:
        pg_checks = [c.name for c in self.checks if isinstance(c, PostgresCheckConfig)]
        problems = []
        if pg_checks and self.postgres is None:
            problems.append("checks: a postgres check needs a [postgres] section")
        if len(pg_checks) > 1:
            problems.append(f"checks: at most one postgres check (got {', '.join(pg_checks)})")
        builtin = set(self.postgres.actions) if self.postgres is not None else set()
        for clash in sorted(builtin & {a.name for a in self.actions}):
            problems.append(f"actions: {clash!r} is also a built-in [postgres] action")
        if self.backup is not None and self.backup.dump and self.postgres is None:
            problems.append("backup.dump needs a [postgres] section (the server it dumps)")
        if self.backup is not None and "backup" in {a.name for a in self.actions}:
            problems.append("actions: 'backup' is the built-in action of [backup]")
        return problems

    @property
    def host_port(self) -> tuple[str, int]:
        return split_host_port(self.listen)


def parse(data: dict[str, Any]) -> AgentConfig:
    """Validate an agent config given as a dict (already parsed TOML)."""
    key_problems = keycheck.check(data)
    if key_problems:
        raise ConfigError(key_problems)
    return validate(
        AgentConfig,
        data,
        tags=frozenset(CHECK_KINDS),
        messages={
            "union_tag_invalid": f"kind must be one of {', '.join(sorted(CHECK_KINDS))}",
            "union_tag_not_found": "kind is missing",
        },
    )


def load(path: Path) -> AgentConfig:
    """Read and validate an agent TOML file. Raises ConfigError with every problem."""
    return parse(read_toml(path))
