"""drwatch's one typed configuration, validated whole at load.

`load(path)` returns a frozen `Config` or raises `ConfigError` listing every problem,
each with its dotted path (`groups[1].checks[0].timeout`). Each component is handed
only its slice (`config.timing.agent`, `config.provider`, ...). Durations are seconds.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from drwatch.backup.config import BackupConfig
from drwatch.backup.config import cross_problems as backup_problems
from drwatch.fields import Duration, HostPort, split_host_port
from drwatch.model.fleet import Role
from drwatch.tomlconfig import read_toml, validate
from drwatch.units import format_duration

Port = Annotated[int, Field(ge=1, le=65535)]
Share = Annotated[float, Field(gt=0, le=1)]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: lower-case letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 63 characters"
        )
    return value


Name = Annotated[str, AfterValidator(_check_name)]


class _Strict(BaseModel):
    # nan and inf are valid TOML floats; no setting of drwatch means either.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


class WatcherConfig(_Strict):
    """drwatch itself: who it is, where it listens and keeps its state."""

    name: Name = "drwatch"
    listen: HostPort = "127.0.0.1:9480"
    state_dir: Path = Path("/var/lib/drwatch")
    log_format: LogFormat = LogFormat.AUTO
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    api_token_file: Path | None = None
    # Read endpoints are open on loopback by default; set true to require the token too.
    api_read_requires_token: bool = False
    # Names (besides listen's host, localhost, IP addresses and alerts.external_url's
    # host) that the web app answers to in the Host header; others get 421, so a
    # DNS-rebinding page cannot read the API from an operator's browser.
    allowed_hosts: list[str] = Field(default_factory=list)


DrillKind = Literal["sandbox", "live", "restore_test"]


class Objective(_Strict):
    rpo: Duration
    rto: Duration


class ObjectivesConfig(_Strict):
    """Recovery objectives: overall, and per data class (which may only be stricter)."""

    rpo: Duration = 900.0
    rto: Duration = 600.0
    data_classes: dict[Name, Objective] = Field(default_factory=dict)
    # Test the plan at least twice a year: each kind in drill_kinds needs a passing drill
    # (drwatch drills) at most this long ago, or DrwatchDrillOverdue fires and
    # `drwatch plan --check` fails.
    drill_interval: Duration = 182 * 86400.0
    drill_kinds: tuple[DrillKind, ...] = ("sandbox",)

    @model_validator(mode="after")
    def _classes_within_overall(self) -> Self:
        problems = []
        if self.drill_interval <= 0:
            problems.append("drill_interval must be greater than 0")
        for name, obj in self.data_classes.items():
            if obj.rpo > self.rpo:
                problems.append(
                    f"data_classes.{name}.rpo ({format_duration(obj.rpo)}) is looser than "
                    f"the overall rpo ({format_duration(self.rpo)})"
                )
            if obj.rto > self.rto:
                problems.append(
                    f"data_classes.{name}.rto ({format_duration(obj.rto)}) is looser than "
                    f"the overall rto ({format_duration(self.rto)})"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ProviderConfig(_Strict):
    """The cloud's provisioning API. Credentials come from the standard AWS chain."""

    kind: Literal["aws"] = "aws"
    regions: list[str] = Field(min_length=1)
    # Per region, an endpoint to use instead of AWS's (the sandbox, moto in tests).
    endpoints: dict[str, str] = Field(default_factory=dict)
    # Tag whose value names the group an instance belongs to.
    group_tag: str = "drwatch:group"
    discovery_interval: Duration = 30.0
    profile: str | None = None

    @model_validator(mode="after")
    def _endpoints_for_known_regions(self) -> Self:
        unknown = sorted(set(self.endpoints) - set(self.regions))
        if unknown:
            raise ValueError(
                f"endpoints names regions that are not in regions: {', '.join(unknown)}"
            )
        return self


class DnsConfig(_Strict):
    """The service's public name in Route 53 (docs/playbooks.md, region.failover): the
    PRIMARY/SECONDARY failover records say which region serves."""

    hosted_zone: str = Field(min_length=1)  # the zone's id (Z...) or its name
    public_name: str = Field(min_length=1)
    # An endpoint to use instead of AWS's (the sandbox, moto in tests).
    endpoint: str | None = None
    # How long a record change may take to reach INSYNC (AWS: usually under a minute).
    change_timeout: Duration = 120.0


class CheckKind(StrEnum):
    HTTP = "http"
    HTTPS = "https"
    TCP = "tcp"


class JsonCondition(_Strict):
    """A field of the JSON body, by dotted path (`checks.db.status`), must equal a value."""

    path: str = Field(min_length=1)
    equals: str | int | float | bool


class AppCheck(_Strict):
    """One application health check, run against every instance of the group."""

    name: Name = "health"
    kind: CheckKind = CheckKind.HTTP
    port: Port
    path: str = "/"
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200]
    )
    body_contains: str | None = None
    json_field: JsonCondition | None = None
    max_latency: Duration | None = None
    # Skip TLS verification (self-signed health endpoints). Off by default.
    insecure_tls: bool = False

    @model_validator(mode="after")
    def _http_only_conditions(self) -> Self:
        if self.kind is CheckKind.TCP and (self.body_contains or self.json_field):
            raise ValueError("a tcp check has no body: drop body_contains/json_field")
        if not self.path.startswith("/"):
            raise ValueError(f"path must start with '/' (got {self.path!r})")
        return self


class Selector(_Strict):
    """Which instances form a group: by tags (all must match) and/or explicit ids."""

    tags: dict[str, str] = Field(default_factory=dict)
    instance_ids: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.tags and not self.instance_ids:
            raise ValueError("select needs tags or instance_ids, or both")
        return self


class GroupConfig(_Strict):
    """A set of instances with one role, selected from the provider."""

    name: Name
    role: Role
    select: Selector
    checks: list[AppCheck] = Field(default_factory=list)
    # Load balancers: the Elastic IP (Name tag or allocation id) that carries the service,
    # and the URL through which the service answers (checked on the `service` layer).
    elastic_ip: str | None = None
    service_url: str | None = None
    # Databases: the data class whose objectives apply.
    data_class: Name | None = None
    # Databases: where their primary/replica roles come from: "postgres_check" (every
    # agent runs the built-in postgres check) or "tags" (drwatch:db-role tags). The
    # agent's check always wins over a tag; unset, `check-config` warns.
    roles_from: Literal["postgres_check", "tags"] | None = None
    # The group's expected size; `recovered` means it is back to this many healthy.
    size: Annotated[int, Field(ge=0, le=100_000)] | None = None

    @model_validator(mode="after")
    def _role_fields(self) -> Self:
        if self.role is not Role.LOAD_BALANCER and (self.elastic_ip or self.service_url):
            raise ValueError("elastic_ip and service_url belong to load_balancer groups only")
        if self.role is not Role.DATABASE and self.roles_from is not None:
            raise ValueError("roles_from belongs to database groups only")
        return self


class LayerTiming(_Strict):
    """How often a layer is checked, how long a check may take, and its hysteresis."""

    interval: Duration
    timeout: Duration
    rise: Annotated[int, Field(ge=1, le=100)] = 2
    fall: Annotated[int, Field(ge=1, le=100)] = 3

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> Self:
        if self.interval <= 0:
            raise ValueError("interval must be greater than 0")
        if self.timeout <= 0:
            raise ValueError("timeout must be greater than 0")
        if self.timeout >= self.interval:
            raise ValueError(
                f"timeout ({format_duration(self.timeout)}) must be shorter than "
                f"interval ({format_duration(self.interval)})"
            )
        return self

    @property
    def max_age(self) -> float:
        """An observation older than this says nothing of now: two intervals plus a timeout."""
        return 2 * self.interval + self.timeout


class TimingConfig(_Strict):
    provider: LayerTiming = LayerTiming(interval=10.0, timeout=5.0, rise=1, fall=2)
    agent: LayerTiming = LayerTiming(interval=5.0, timeout=2.0)
    app: LayerTiming = LayerTiming(interval=5.0, timeout=2.0)
    canary: LayerTiming = LayerTiming(interval=5.0, timeout=2.0)


class AgentClientConfig(_Strict):
    """How the daemon reaches the agent on each instance."""

    port: Port = 9180
    scheme: Literal["http", "https"] = "http"
    secret_file: Path
    # Which of the instance's addresses to use.
    address: Literal["private_ip", "public_ip"] = "private_ip"
    max_response_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 256 * 1024
    # Honour an instance tag `drwatch:agent-addr` (host:port) over the address above. Off by
    # default: whoever can tag an instance could point the watcher elsewhere (the sandbox
    # turns it on for its loopback agents).
    allow_address_tag: bool = False
    # secret_file holds a master secret and each agent has its own, derived from it and
    # its instance id (`drwatch agent-secret`): one leaked host secret opens one host.
    per_host_secrets: bool = False
    # scheme = "https": verify the agents' certificates against this CA bundle (PEM)
    # instead of the system's trust store.
    tls_ca_file: Path | None = None

    @model_validator(mode="after")
    def _tls_needs_https(self) -> Self:
        if self.tls_ca_file is not None and self.scheme != "https":
            raise ValueError('tls_ca_file is set but scheme is not "https"')
        return self


class Canary(_Strict):
    """An endpoint outside every watched cloud. When all canaries fail, drwatch doubts itself."""

    name: Name
    url: str | None = None
    tcp: HostPort | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.url is None) == (self.tcp is None):
            raise ValueError("a canary has exactly one of url or tcp")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https:// (got {self.url!r})")
        return self


class PolicyConfig(_Strict):
    """The decision gates and the thresholds of classification."""

    dry_run: bool = False
    paused: bool = False
    warmup: Duration = 30.0
    cooldown: Duration = 600.0
    max_concurrent: Annotated[int, Field(ge=0, le=1000)] = 2
    # Never replace more than this share of a group within blast_window.
    blast_radius: Share = 0.5
    blast_window: Duration = 1800.0
    approval_required: tuple[Literal["instance", "zone", "region"], ...] = ("region",)
    # "Running at the provider but unreachable" must last this long before it counts as dead.
    dead_grace: Duration = 30.0
    # With several watchers ([cluster]): the grace for an instance whose silence a
    # vantage quorum of at least two watchers corroborates (never longer than
    # dead_grace). bench/README.md, "cluster_detection.py", has the numbers behind it.
    corroborated_grace: Duration = 10.0
    # Share of a zone's instances that must be down (across more than one role) for a zone
    # finding, while another zone of the same region still answers.
    zone_down_share: Share = 0.75
    # Capacity warnings when the agent gives a usage percentage but no level of its own.
    disk_warn_percent: Annotated[float, Field(gt=0, le=100)] = 90.0
    memory_warn_percent: Annotated[float, Field(gt=0, le=100)] = 95.0
    # How long a submitted playbook run may stay invisible in the runner before its
    # incident counts as failed.
    verify_window: Duration = 120.0
    # A freshly launched instance that has never answered is booting, not lost, for this
    # long after its launch (EC2 boots take 30-90 s, plus the application's start).
    boot_grace: Duration = 300.0


class Contact(_Strict):
    """A person or a rota the plan names: who they are and how to reach them."""

    name: str = Field(min_length=1)
    role: str = ""
    email: str = ""
    phone: str = ""
    # When to call them: "business hours", "24/7 (on-call rota)".
    hours: str = ""


class LiveDrillSchedule(_Strict):
    """A live drill the daemon runs by itself (docs/drills.md). `approved_by` is the
    standing approval, recorded with every run; the guards still refuse at run time."""

    scenario: Path
    # Either a crontab line ("0 10 1 3,9 *": 10:00 UTC on 1 March and 1 September) ...
    cron: str | None = None
    # ... or an interval from the daemon's start ("182d").
    every: Duration | None = None
    approved_by: str = Field(min_length=1)

    @model_validator(mode="after")
    def _one_schedule(self) -> Self:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of cron or every")
        if self.every is not None and self.every < 1:
            raise ValueError("every must be at least 1s")
        if self.cron is not None:
            from apscheduler.triggers.cron import CronTrigger  # noqa: PLC0415 - only here

            try:
                CronTrigger.from_crontab(self.cron, timezone="UTC")
            except ValueError as err:
                raise ValueError(f"cron {self.cron!r}: {err}") from None
        return self


class PlanConfig(_Strict):
    """What only people know and `drwatch plan` prints: who owns the service, who approves
    what drwatch will not do alone, and whom to call, in order."""

    title: str = "Disaster-recovery plan"
    # The service in one or two plain sentences, for readers who do not run it.
    service: str = ""
    owners: list[Contact] = Field(default_factory=list)
    # Who may approve the playbooks that wait for approval (policy.approval_required).
    approvers: list[Contact] = Field(default_factory=list)
    # In the order to call them.
    escalation: list[Contact] = Field(default_factory=list)
    # Live drills on a schedule, run by the daemon (opt-in: none by default).
    live_drills: list[LiveDrillSchedule] = Field(default_factory=list)


class TrendsConfig(_Strict):
    """Early warning from the agents' recent samples (disk time-until-full, sustained
    CPU and memory pressure). Warnings only: they never open an incident or act."""

    # How much recent history the fit and the pressure windows look at.
    window: Duration = 1800.0
    # Fewer samples than this (or spanning under half the window) give no estimate.
    min_samples: Annotated[int, Field(ge=3, le=10_000)] = 10
    # disk_full_soon when a disk is estimated full within this.
    disk_full_horizon: Duration = 86400.0
    # cpu_pressure / memory_pressure when usage stays at or above these for `sustain`.
    cpu_percent: Annotated[float, Field(gt=0, le=100)] = 90.0
    memory_percent: Annotated[float, Field(gt=0, le=100)] = 90.0
    sustain: Duration = 600.0
    # Samples kept per instance (bounds memory whatever the agent interval).
    max_samples: Annotated[int, Field(ge=10, le=100_000)] = 720

    @model_validator(mode="after")
    def _sane(self) -> Self:
        if self.window <= 0 or self.sustain <= 0 or self.disk_full_horizon <= 0:
            raise ValueError("window, sustain and disk_full_horizon must be greater than 0")
        if self.sustain > self.window:
            raise ValueError(
                f"sustain ({format_duration(self.sustain)}) cannot exceed window "
                f"({format_duration(self.window)}): older samples are forgotten"
            )
        return self


def _check_http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]


class AlertsConfig(_Strict):
    """Where drwatch pushes alerts: every Alertmanager replica (API v2), and a JSON webhook."""

    # Every replica of one Alertmanager cluster: drwatch sends to each, it does not balance.
    alertmanager_urls: list[HttpUrl] = Field(default_factory=list)
    # A generic JSON webhook: receives each alert when it fires, changes and resolves.
    webhook_url: HttpUrl | None = None
    # Active alerts are sent again this often, with endsAt four intervals ahead.
    resend_interval: Duration = 60.0
    # One delivery attempt may take this long; a failed one is retried with backoff.
    timeout: Duration = 5.0
    # Links in alerts (generatorURL) point here: the status page as operators reach it.
    external_url: HttpUrl | None = None
    # Alerts waiting per receiver while it fails; beyond this, new ones are dropped (counted).
    queue_size: Annotated[int, Field(ge=10, le=100_000)] = 1000

    @model_validator(mode="after")
    def _sane(self) -> Self:
        dups = sorted({u for u in self.alertmanager_urls if self.alertmanager_urls.count(u) > 1})
        if dups:
            raise ValueError(f"alertmanager_urls lists {', '.join(dups)} more than once")
        if self.timeout <= 0 or self.timeout >= self.resend_interval:
            raise ValueError(
                f"timeout ({format_duration(self.timeout)}) must be above 0 and shorter than "
                f"resend_interval ({format_duration(self.resend_interval)})"
            )
        return self


class EtcdTls(_Strict):
    """TLS to etcd: the CA that signed its server certificates, and a client pair if etcd
    asks for one (`--client-cert-auth`)."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: give both or neither")
        return self


class ClusterConfig(_Strict):
    """Several watchers sharing etcd: one leader acts, every watcher observes.

    Left out, drwatch is one watcher on SQLite. Timing rules (checked below, with the
    numbers in the message): a leader keeps its lease alive every `keepalive_interval`,
    each etcd call may take `request_timeout`, and the leader stops acting once no
    keepalive was confirmed for `lease_ttl - safety_margin`, before etcd expires the lease.
    """

    # This watcher's name among the watchers: unique, stable across restarts.
    name: Name
    # etcd client endpoints (host:port), all members of one etcd cluster.
    endpoints: list[HostPort] = Field(min_length=1)
    # Every key drwatch writes lives under /<namespace>/ (several fleets may share etcd).
    namespace: Name = "drwatch"
    tls: EtcdTls | None = None
    # etcd authentication (`etcdctl user add`): the user, and a file holding its password.
    username: str | None = None
    password_file: Path | None = None
    # etcd grants whole seconds, and refuses leases shorter than about 2 s.
    lease_ttl: Duration = 10.0
    # Default: a third of the lease TTL.
    keepalive_interval: Duration | None = None
    request_timeout: Duration = 1.0
    # The leader stops acting this long before its lease could expire at etcd: covers
    # clock rate drift and the side effect already under way when the lease is lost.
    safety_margin: Duration = 2.0
    # How many watchers are deployed, and how many fresh views must agree before a
    # target or zone is down by silence alone (default: a majority of watchers).
    watchers: Annotated[int, Field(ge=1, le=15)] = 3
    vantage_quorum: Annotated[int, Field(ge=1, le=15)] | None = None
    # Closed incidents stay in etcd this long after they closed, then the leader deletes
    # them there; every watcher keeps its own copy in its local history (SQLite).
    incident_retention: Annotated[Duration, Field(ge=3600.0)] = 7 * 86400.0

    @property
    def keepalive_every(self) -> float:
        return self.keepalive_interval if self.keepalive_interval else self.lease_ttl / 3

    @property
    def quorum(self) -> int:
        return self.vantage_quorum if self.vantage_quorum else self.watchers // 2 + 1

    @property
    def acting_window(self) -> float:
        """How long after a keepalive was sent the leader may still act on it."""
        return self.lease_ttl - self.safety_margin

    @model_validator(mode="after")
    def _timing(self) -> Self:
        problems = list(_cluster_problems(self))
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _cluster_problems(c: ClusterConfig) -> Iterable[str]:
    if (c.username is None) != (c.password_file is None):
        yield "username and password_file go together: give both or neither"
    if c.keepalive_interval is not None and c.keepalive_interval <= 0:
        yield "keepalive_interval must be greater than 0"
    if not c.lease_ttl.is_integer() or not 2 <= c.lease_ttl <= 300:
        yield (
            f"lease_ttl ({format_duration(c.lease_ttl)}) must be whole seconds from 2s to 5m: "
            "etcd grants leases in whole seconds"
        )
        return
    if c.request_timeout <= 0 or c.safety_margin <= 0:
        yield "request_timeout and safety_margin must be greater than 0"
        return
    if c.safety_margin >= c.lease_ttl / 2:
        yield (
            f"safety_margin ({format_duration(c.safety_margin)}) must be under half of "
            f"lease_ttl ({format_duration(c.lease_ttl)})"
        )
        return
    # One lost keepalive must not depose a healthy leader: the next one, sent an interval
    # later and answered within the request timeout, must land inside the acting window.
    need = 2 * c.keepalive_every + c.request_timeout
    if need > c.acting_window:
        yield (
            f"2 x keepalive_interval ({format_duration(c.keepalive_every)}) + request_timeout "
            f"({format_duration(c.request_timeout)}) = {format_duration(need)} must fit within "
            f"lease_ttl - safety_margin ({format_duration(c.lease_ttl)} - "
            f"{format_duration(c.safety_margin)} = {format_duration(c.acting_window)}): "
            "otherwise one lost keepalive stops a healthy leader"
        )
    if c.vantage_quorum is not None and c.vantage_quorum > c.watchers:
        yield (
            f"vantage_quorum ({c.vantage_quorum}) cannot exceed watchers ({c.watchers}): "
            "no silence would ever count"
        )


class Config(_Strict):
    watcher: WatcherConfig = WatcherConfig()
    objectives: ObjectivesConfig = ObjectivesConfig()
    provider: ProviderConfig
    agent: AgentClientConfig
    timing: TimingConfig = TimingConfig()
    policy: PolicyConfig = PolicyConfig()
    groups: list[GroupConfig] = Field(min_length=1)
    canaries: list[Canary] = Field(default_factory=list)
    alerts: AlertsConfig = AlertsConfig()
    plan: PlanConfig = PlanConfig()
    trends: TrendsConfig = TrendsConfig()
    # Several watchers on etcd (docs/cluster.md); None: one watcher on SQLite.
    cluster: ClusterConfig | None = None
    # Backups by data class (drwatch/backup/config.py); none configured: no backups.
    backup: BackupConfig | None = None
    # Data residency: per data class, the regions its data may live in. region.failover
    # refuses to move the service where a class may not live (a readiness warning too).
    residency: dict[Name, list[Annotated[str, Field(min_length=1)]]] = Field(default_factory=dict)
    # The public name and its hosted zone (region.failover); None: no DNS is read or switched.
    dns: DnsConfig | None = None

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        problems = list(_cross_problems(self))
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def group(self, name: str) -> GroupConfig | None:
        return next((g for g in self.groups if g.name == name), None)


def _cross_problems(cfg: Config) -> Iterable[str]:
    names = [g.name for g in cfg.groups]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        yield f"groups: the name {dup!r} is used by more than one group"
    canary_names = [c.name for c in cfg.canaries]
    for dup in sorted({n for n in canary_names if canary_names.count(n) > 1}):
        yield f"canaries: the name {dup!r} is used by more than one canary"
    for i, g in enumerate(cfg.groups):
        if g.data_class and g.data_class not in cfg.objectives.data_classes:
            yield (
                f"groups[{i}].data_class: {g.data_class!r} is not defined under "
                "objectives.data_classes"
            )
        for j, check in enumerate(g.checks):
            if check.max_latency is not None and check.max_latency > cfg.timing.app.timeout:
                yield (
                    f"groups[{i}].checks[{j}].max_latency ({format_duration(check.max_latency)})"
                    f" exceeds timing.app.timeout ({format_duration(cfg.timing.app.timeout)})"
                )
    yield from _backup_problems(cfg, names)
    yield from _residency_problems(cfg)
    grace_floor = cfg.timing.provider.interval
    if cfg.policy.dead_grace < grace_floor:
        yield (
            f"policy.dead_grace ({format_duration(cfg.policy.dead_grace)}) must be at least "
            f"timing.provider.interval ({format_duration(grace_floor)}): otherwise the provider "
            "cannot corroborate before an instance is called dead"
        )
    corroborated = min(cfg.policy.corroborated_grace, cfg.policy.dead_grace)
    if cfg.cluster is not None and corroborated < grace_floor:
        yield (
            f"policy.corroborated_grace ({format_duration(corroborated)}) "
            f"must be at least timing.provider.interval ({format_duration(grace_floor)}): "
            "otherwise the provider cannot corroborate before an instance is called dead"
        )
    yield from _live_drill_problems(cfg)
    if not _is_loopback(cfg.watcher.listen) and cfg.watcher.api_token_file is None:
        yield (
            f"watcher.api_token_file: required when watcher.listen ({cfg.watcher.listen}) "
            "is not a loopback address"
        )


def _backup_problems(cfg: Config, groups: list[str]) -> Iterable[str]:
    if cfg.backup is None:
        return
    # With [cluster], only the leader runs backups (drwatch.backup.cluster).
    yield from backup_problems(cfg.backup, backup_rpo_of(cfg), groups)


def _residency_problems(cfg: Config) -> Iterable[str]:
    known = set(cfg.objectives.data_classes) | {g.data_class for g in cfg.groups if g.data_class}
    known |= set(cfg.backup.classes) if cfg.backup is not None else set()
    for name, regions in sorted(cfg.residency.items()):
        if name not in known:
            yield (
                f"residency.{name}: not a data class (define it under objectives.data_classes "
                "or backup.classes)"
            )
        if not regions:
            yield f"residency.{name}: name at least one region its data may live in"


def backup_rpo_of(cfg: Config) -> dict[str, float]:
    """Each backup class's RPO: its own under objectives.data_classes, else the overall."""
    own = cfg.objectives.data_classes
    classes = cfg.backup.classes if cfg.backup is not None else {}
    return {n: own[n].rpo if n in own else cfg.objectives.rpo for n in classes}


def _live_drill_problems(cfg: Config) -> Iterable[str]:
    """Each scheduled live drill's scenario must read and use only live verbs now, not
    on the day it runs."""
    if not cfg.plan.live_drills:
        return
    from drwatch.errors import ConfigError  # noqa: PLC0415
    from drwatch.plan.live import parse_live  # noqa: PLC0415 - it imports this module

    for i, spec in enumerate(cfg.plan.live_drills):
        try:
            parse_live(read_toml(spec.scenario))
        except ConfigError as err:
            for problem in err.problems:
                yield f"plan.live_drills[{i}].scenario ({spec.scenario}): {problem}"


def _is_loopback(host_port: str) -> bool:
    host = split_host_port(host_port)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse(data: dict[str, Any]) -> Config:
    """Validate a config given as a dict (already parsed TOML)."""
    return validate(Config, data)


def load(path: Path) -> Config:
    """Read and validate a TOML config file. Raises ConfigError with every problem."""
    return parse(read_toml(path))
