"""A drwatch API over a fixed world for operator-surface tests: the real `drwatch.web.api`
routes, a real incident store and the real `Cycle` controls, no cloud.

The world: the default sandbox topology with zone us-east-1b out, a zone incident
whose `app_server.replace` run is halfway, an instance incident awaiting approval,
and one recovered incident from earlier. Build it on the thread that serves it
(SQLite connections stay on their thread).
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from aiohttp import web

from drwatch.assess.readiness import ReadinessReport
from drwatch.config import PolicyConfig, TimingConfig
from drwatch.cycle import Cycle, NullRunner
from drwatch.incidents import IncidentStore
from drwatch.model import (
    Fleet,
    Health,
    Instance,
    Layer,
    PlaybookName,
    Role,
    Scope,
    Snapshot,
    StepRecord,
    StepStatus,
    TargetHealth,
)
from drwatch.model.findings import Diagnosis, Finding, Severity
from drwatch.model.incident import GateEntry, Incident, IncidentOutcome, Phase
from drwatch.model.regions import RegionRoles
from drwatch.web import api
from drwatch.web import readiness as readiness_web
from drwatch.web.status import add_routes as add_status_routes

NOW = 1_795_000_000.0  # a fixed clock: two reads of the API give the same document
TOKEN = "operator-token-0123456789abcdef"
ZONE_INC = "inc-20261126T140501-3f9a"
DB_INC = "inc-20261126T140733-77c1"
OLD_INC = "inc-20261126T120000-0001"
OUT_ZONE = "us-east-1b"

TOPOLOGY = [
    ("lb-1", Role.LOAD_BALANCER, "us-east-1", "us-east-1a"),
    ("lb-2", Role.LOAD_BALANCER, "us-east-1", "us-east-1b"),
    ("app-1", Role.APP_SERVER, "us-east-1", "us-east-1a"),
    ("app-2", Role.APP_SERVER, "us-east-1", "us-east-1a"),
    ("app-3", Role.APP_SERVER, "us-east-1", "us-east-1b"),
    ("app-4", Role.APP_SERVER, "us-east-1", "us-east-1b"),
    ("app-5", Role.APP_SERVER, "us-east-1", "us-east-1c"),
    ("app-6", Role.APP_SERVER, "us-east-1", "us-east-1c"),
    ("db-1", Role.DATABASE, "us-east-1", "us-east-1a"),
    ("db-2", Role.DATABASE, "us-east-1", "us-east-1b"),
    ("db-3", Role.DATABASE, "eu-west-1", "eu-west-1a"),
    ("app-eu-1", Role.APP_SERVER, "eu-west-1", "eu-west-1a"),
    ("lb-eu-1", Role.LOAD_BALANCER, "eu-west-1", "eu-west-1a"),
]
STEPS = (
    ("check_zone", StepStatus.DONE, -52, -52, "us-east-1b impaired; placing in us-east-1c"),
    ("launch_replacement", StepStatus.DONE, -51, -47, "i-0abc (app-3) in us-east-1c"),
    ("wait_healthy", StepStatus.DONE, -47, -20, "agent and app up after 27s"),
    ("register_with_lb", StepStatus.RUNNING, -20, None, ""),
)


def fleet() -> Fleet:
    return Fleet(
        instances=tuple(
            Instance(f"i-{n:04d}", name, region, zone, role, role.value)
            for n, (name, role, region, zone) in enumerate(TOPOLOGY)
        ),
        discovered_at=NOW - 30,
    )


def _th(target: str, layer: Layer, health: Health) -> TargetHealth:
    return TargetHealth(target, layer, health, since=NOW - 60, attempted_at=NOW - 2, ok_at=None)


def snapshot() -> Snapshot:
    rows = []
    for inst in fleet():
        out = inst.zone == OUT_ZONE
        rows.append(_th(inst.id, Layer.PROVIDER, Health.UNKNOWN if out else Health.UP))
        for layer in (Layer.AGENT, Layer.APP):
            rows.append(_th(inst.id, layer, Health.DOWN if out else Health.UP))
    for zone in ("us-east-1a", OUT_ZONE, "us-east-1c", "eu-west-1a"):
        rows.append(_th(zone, Layer.ZONE, Health.DOWN if zone == OUT_ZONE else Health.UP))
    rows += [_th(c, Layer.CANARY, Health.UP) for c in ("quad9", "cloudflare")]
    health = MappingProxyType({(t.target, t.layer): t for t in rows})
    return Snapshot(taken_at=NOW - 1, fleet=fleet(), health=health)


def _ids(*names: str) -> tuple[str, ...]:
    return tuple(i.id for i in fleet() if i.name in names)


def incidents() -> list[Incident]:
    steps = tuple(
        StepRecord(name, status, NOW + a, None if b is None else NOW + b, detail)
        for name, status, a, b, detail in STEPS
    )
    zone = Incident(
        id=ZONE_INC,
        scope=Scope.ZONE,
        scope_key=f"zone:{OUT_ZONE}",
        finding=Finding.ZONE_OUTAGE,
        severity=Severity.OUTAGE,
        region="us-east-1",
        zone=OUT_ZONE,
        roles=("app_server", "database", "load_balancer"),
        groups=("app_server", "database", "load_balancer"),
        target_ids=_ids("app-3", "app-4", "db-2", "lb-2"),
        target_names=("app-3", "app-4", "db-2", "lb-2"),
        opened_at=NOW - 60,
        updated_at=NOW - 20,
        evidence="4/4 instances silent on agent and app; us-east-1a and us-east-1c answer",
        phase=Phase.ACTING,
        playbook=PlaybookName.APP_REPLACE,
        playbooks=(PlaybookName.APP_REPLACE,),
        acted_at=NOW - 53,
        gate_history=(GateEntry(NOW - 60, ("warm-up: 4 s left",)),),
        steps=steps,
    )
    db = Incident(
        id=DB_INC,
        scope=Scope.INSTANCE,
        scope_key="instance:i-0009",
        finding=Finding.INSTANCE_UNREACHABLE,
        severity=Severity.OUTAGE,
        region="us-east-1",
        zone=OUT_ZONE,
        roles=("database",),
        groups=("database",),
        target_ids=_ids("db-2"),
        target_names=("db-2",),
        opened_at=NOW - 45,
        updated_at=NOW - 45,
        phase=Phase.AWAITING_APPROVAL,
        playbook=PlaybookName.DB_RECOVER,
        gate_reasons=("approval required: database.recover for db-2",),
        gate_history=(GateEntry(NOW - 45, ("approval required: database.recover for db-2",)),),
    )
    old = Incident(
        id=OLD_INC,
        scope=Scope.INSTANCE,
        scope_key="instance:i-0006",
        finding=Finding.INSTANCE_STOPPED,
        severity=Severity.OUTAGE,
        region="us-east-1",
        zone="us-east-1c",
        roles=("app_server",),
        groups=("app_server",),
        target_ids=_ids("app-5"),
        target_names=("app-5",),
        opened_at=NOW - 7200,
        updated_at=NOW - 7130,
        phase=Phase.ENDED,
        final=IncidentOutcome.RECOVERED,
        closed_at=NOW - 7130,
        recovered_at=NOW - 7130,
    )
    return [zone, db, old]


READINESS_EVIDENCE = "eu-west-1 (standby region): no load balancer answers (lb-eu-1 down)"


def readiness() -> ReadinessReport:
    """us-east-1 serves, eu-west-1 stands by, and its load balancer is down."""
    regions = RegionRoles(
        regions=("us-east-1", "eu-west-1"),
        serving="us-east-1",
        standby="eu-west-1",
        database_regions=("us-east-1",),
        detail="us-east-1 serves (DNS PRIMARY: unknown; db-1 in us-east-1); standby eu-west-1",
    )
    lb = Diagnosis(
        Finding.LB_STANDBY_MISSING,
        key="region:eu-west-1",
        region="eu-west-1",
        targets=_ids("lb-eu-1"),
        evidence=READINESS_EVIDENCE,
    )
    return ReadinessReport((lb,), regions)


def build_app(
    state_dir: Path,
    *,
    token: str | None = TOKEN,
    open_incidents: bool = True,
    readiness_gap: bool = True,
) -> web.Application:
    """The real API and status page over the fixed world; without `open_incidents` only
    the recovered incident is kept, without `readiness_gap` no readiness warning."""
    store = IncidentStore(state_dir)
    for inc in incidents():
        if open_incidents or inc.id == OLD_INC:
            store.save(inc)
    cycle = Cycle(PolicyConfig(warmup=0), TimingConfig(), store, NullRunner(), NOW - 3600)
    state = api.LiveApiState(
        watcher_name="drwatch-test",
        dry_run=False,
        api_token=token.encode() if token else None,
        incidents=store,
        controls=cycle,
        snapshot=snapshot(),
        clock=lambda: NOW,
    )
    app = web.Application()
    api.add_routes(app, state)
    report = readiness() if readiness_gap else ReadinessReport()
    readiness_web.add_routes(app, readiness_web.ReadinessState(report))
    add_status_routes(app)
    app.on_cleanup.append(lambda _app: _close(store))
    return app


async def _close(store: IncidentStore) -> None:
    store.close()
