"""Drill scenarios (DESIGN.md "Drills"): parsed and validated whole before anything starts.

`load_scenario(path, topology)` returns a `Scenario` or raises `ConfigError` listing
every problem with its place (`event[2].do: unknown verb 'explode'`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from drwatch.errors import ConfigError
from drwatch.sandbox.backup_verdict import ExpectBackup
from drwatch.sandbox.faults import (
    BACKUP_VERBS,
    DATA_CLASSES,
    HEAL,
    VERBS,
    check_target,
    parse_param,
)
from drwatch.sandbox.topology import Topology
from drwatch.tomlconfig import read_toml
from drwatch.units import parse_duration


def _duration(value: object) -> float:
    if isinstance(value, str) and value.strip().startswith("-"):
        raise ValueError(f"a time cannot be negative (got {value!r})")
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration)]
# A drill is a timeline of minutes; a day is already a soak, and more is a typo.
MAX_DRILL_S = 86400.0
Param = str | int | float

Outcome = Literal["recovered", "failed", "blocked", "awaiting_approval", "detected_only", "cleared"]
ExpectScope = Literal["instance", "zone", "region", "provider_api"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Objectives(_Strict):
    rto: Duration | None = None
    rpo: Duration | None = None


class Event(_Strict):
    at: Duration
    do: str = Field(min_length=1)
    target: str = Field(min_length=1)
    delay: Param | None = None
    period: Param | None = None
    percent: Param | None = None
    rate: Param | None = None  # grow-disk: percent per minute
    # An instance name: from `at`, the event waits until a playbook run for an incident
    # naming that instance is past its first step (journaled done) and not finished (so
    # "mid-playbook" holds however long detection took); later events wait with it.
    # Never by the end: the event fails.
    after_step: str | None = Field(default=None, min_length=1)

    def param_value(self) -> object:
        _, name = VERBS.get(self.do, (None, None))
        return getattr(self, name) if name else None


class Expect(_Strict):
    scope: ExpectScope
    role: Literal["load_balancer", "app_server", "database"] | None = None
    targets: list[str] | None = None
    playbook: str | None = None
    outcome: Outcome | None = None
    within: Duration | None = None
    # Outcomes the incident must have shown on its way (say `blocked` while paused).
    seen: list[Outcome] | None = None

    def describe(self) -> str:
        parts = [f"scope={self.scope}"]
        for key in ("role", "targets", "playbook", "outcome", "seen"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={value}")
        if self.within is not None:
            parts.append(f"within={self.within:g}s")
        return " ".join(parts)


class ExpectFinding(_Strict):
    """A finding (warnings too) in the daemon's status during the drill (DESIGN.md)."""

    finding: str = Field(min_length=1)
    targets: list[str] | None = None
    data_class: str | None = None
    # Backup findings: the location (primary | standby_region | offsite) in their facts.
    location: str | None = None
    within: Duration | None = None
    absent: bool = False

    def describe(self) -> str:
        parts = [f"finding={self.finding}"]
        if self.targets is not None:
            parts.append(f"targets={self.targets}")
        if self.data_class is not None:
            parts.append(f"data_class={self.data_class}")
        if self.location is not None:
            parts.append(f"location={self.location}")
        if self.within is not None:
            parts.append(f"within={self.within:g}s")
        if self.absent:
            parts.append("absent")
        return " ".join(parts)


class Scenario(_Strict):
    name: str = Field(min_length=1)
    duration: Duration
    objectives: Objectives = Objectives()
    event: list[Event] = Field(default_factory=list)
    expect: list[Expect] = Field(default_factory=list)
    expect_finding: list[ExpectFinding] = Field(default_factory=list)
    expect_backup: list[ExpectBackup] = Field(default_factory=list)
    expect_no_playbooks: bool = False
    max_incidents: Annotated[int, Field(ge=0, le=10_000)] | None = None
    postgres: bool = False
    # Backups by data class, with short schedules (docs/sandbox.md); `watcher_key`
    # gives the watcher the private key's copy.
    backups: bool = False
    watcher_key: bool = False
    # At the end, the service address must answer (2xx) from a load balancer in this region
    # (a region failover drill: the public name now leads to the standby region).
    expect_service_region: str | None = None
    # Several watchers: a local etcd and drwatch-1 .. drwatch-N; one leads, all observe.
    watchers: Annotated[int, Field(ge=1, le=5)] = 1

    def timeline(self) -> list[Event]:
        return sorted(self.event, key=lambda e: e.at)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _pydantic_problems(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and "[" in p))
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "missing":
            msg = "required field is missing"
        elif e["type"] == "extra_forbidden":
            msg = "unknown field"
        problems.append(f"{_loc(loc)}: {msg}")
    return problems


def _event_problems(i: int, ev: Event, sc: Scenario, topo: Topology) -> list[str]:
    where = f"event[{i}]"
    if ev.do != HEAL and ev.do not in VERBS:
        return [f"{where}.do: unknown verb {ev.do!r}"]
    problems = []
    problem = check_target(topo, ev.do, ev.target)
    if problem is not None:
        problems.append(f"{where}.target: {problem}")
    if ev.at > sc.duration:
        problems.append(f"{where}.at: {ev.at:g}s is after the end (duration {sc.duration:g}s)")
    if ev.after_step is not None and topo.by_name(ev.after_step) is None:
        problems.append(f"{where}.after_step: unknown instance {ev.after_step!r}")
    if ev.do != HEAL:
        try:
            parse_param(ev.do, ev.param_value())
        except ValueError as err:
            problems.append(f"{where}: {err}")
    return problems


CLUSTER_VERBS = ("kill-leader", "etcd-outage", "cut-vantage", "cut-etcd")


def _semantic_problems(sc: Scenario, topo: Topology) -> list[str]:
    problems = []
    if sc.duration <= 0:
        problems.append("duration: must be greater than 0")
    if sc.duration > MAX_DRILL_S:
        problems.append(f"duration: a drill lasts at most 24h (got {sc.duration:g}s)")
    for i, ev in enumerate(sc.event):
        problems += _event_problems(i, ev, sc, topo)
        if ev.do in CLUSTER_VERBS and sc.watchers < 2:
            problems.append(f"event[{i}].do: {ev.do} needs several watchers (watchers = 3)")
    for i, ex in enumerate(sc.expect):
        for name in ex.targets or []:
            if topo.by_name(name) is None:
                problems.append(f"expect[{i}].targets: unknown instance {name!r}")
    for i, ef in enumerate(sc.expect_finding):
        problems += _finding_problems(i, ef, topo)
    return problems + _backup_problems(sc)


def _backup_problems(sc: Scenario) -> list[str]:
    problems = [
        f"event[{i}]: {ev.do} needs backups = true (the sandbox's backups)"
        for i, ev in enumerate(sc.event)
        if ev.do in BACKUP_VERBS and not sc.backups
    ]
    for i, eb in enumerate(sc.expect_backup):
        if not sc.backups:
            problems.append(f"expect_backup[{i}]: needs backups = true (the sandbox's backups)")
        if eb.data_class not in DATA_CLASSES:
            problems.append(
                f"expect_backup[{i}].data_class: {eb.data_class!r} is not one of the sandbox's "
                f"classes ({', '.join(DATA_CLASSES)})"
            )
    return problems


def _finding_problems(i: int, ef: ExpectFinding, topo: Topology) -> list[str]:
    where = f"expect_finding[{i}]"
    problems = [
        f"{where}.targets: unknown instance {name!r}"
        for name in ef.targets or []
        if topo.by_name(name) is None
    ]
    if ef.targets is not None and ef.data_class is not None:
        problems.append(f"{where}: give targets or data_class, not both")
    if ef.absent and ef.within is not None:
        problems.append(f"{where}: within has no meaning with absent = true")
    return problems


def parse_scenario(data: dict[str, Any], topo: Topology) -> Scenario:
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_pydantic_problems(err)) from None
    problems = _semantic_problems(scenario, topo)
    if problems:
        raise ConfigError(problems)
    return scenario


def load_scenario(path: Path, topo: Topology) -> Scenario:
    return parse_scenario(read_toml(path), topo)
