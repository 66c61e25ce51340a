"""assess: a frozen snapshot and `now` in, an `Assessment` out. Pure: no await, no clock."""

from __future__ import annotations

from dataclasses import dataclass

from drwatch.assess import rules, scopes
from drwatch.assess.regions import serving_regions
from drwatch.assess.rules import Context, Rule
from drwatch.assess.views import RulesConfig, instance_views, named_views
from drwatch.model.findings import Diagnosis, Finding, Severity
from drwatch.model.observation import Layer
from drwatch.model.plan import Scope
from drwatch.model.regions import RegionRoles
from drwatch.model.snapshot import Snapshot

# The rules, in the order their diagnoses are listed. Explicit: one line per rule.
RULES: tuple[tuple[str, Rule], ...] = (
    ("watcher", scopes.rule_watcher),
    ("discovery", scopes.rule_discovery),
    ("region", scopes.rule_region),
    ("provider_api", scopes.rule_provider_api),
    ("zone", scopes.rule_zone),
    ("instance_gone", rules.rule_instance_gone),
    ("instance_impaired", rules.rule_instance_impaired),
    ("instance_unreachable", rules.rule_instance_unreachable),
    ("instance_booting", rules.rule_instance_booting),
    ("app_failed", rules.rule_app_failed),
    ("app_unresponsive", rules.rule_app_unresponsive),
    ("agent_down", rules.rule_agent_down),
    ("capacity", rules.rule_capacity),
)


@dataclass(frozen=True, slots=True)
class Assessment:
    """What the fleet looks like now. `diagnoses` are after absorption (a zone outage
    hides the instance findings inside it); `healthy`/`total` count watched instances."""

    at: float
    diagnoses: tuple[Diagnosis, ...]
    healthy: int
    total: int

    @property
    def watcher_impaired(self) -> Diagnosis | None:
        """Why drwatch distrusts what it sees (canaries failing, or blind), if it does."""
        return next((d for d in self.diagnoses if d.severity is Severity.WATCHER), None)

    @property
    def incidents(self) -> tuple[Diagnosis, ...]:
        """The diagnoses that open (or keep open) an incident."""
        return tuple(d for d in self.diagnoses if d.severity.opens_incident)

    @property
    def warnings(self) -> tuple[Diagnosis, ...]:
        return tuple(d for d in self.diagnoses if d.severity is Severity.WARNING)

    def findings(self) -> tuple[Finding, ...]:
        return tuple(d.finding for d in self.diagnoses)


def assess(
    snapshot: Snapshot,
    now: float,
    cfg: RulesConfig,
    retired: frozenset[str] = frozenset(),
    regions: RegionRoles | None = None,
) -> Assessment:
    """Classify the fleet. `retired` instance ids (replaced by a playbook) are not judged.
    `regions`: which region serves (drwatch.model.regions); by default, from the
    snapshot alone (drwatch.assess.regions.serving_regions)."""
    views = instance_views(snapshot, now, cfg, retired)
    ctx = Context(
        now=now,
        cfg=cfg,
        instances=views,
        zones=named_views(snapshot, Layer.ZONE, now, cfg),
        apis=named_views(snapshot, Layer.API, now, cfg),
        canaries=named_views(snapshot, Layer.CANARY, now, cfg),
        regions=regions if regions is not None else serving_regions(snapshot),
        discovery=snapshot.discovery,
        fleet_groups=frozenset(i.group for i in snapshot.fleet),
        corroborated=snapshot.corroborated,
    )
    found = [d for _, rule in RULES for d in rule(ctx)]
    return Assessment(
        at=now,
        diagnoses=absorb(found),
        healthy=sum(1 for v in views if v.healthy),
        total=len(views),
    )


def absorb(found: list[Diagnosis]) -> tuple[Diagnosis, ...]:
    """Wider scopes hide narrower ones: the watcher hides everything; a region (outage or
    suspect) hides the zones and instances in it; a zone hides its instances."""
    watcher = [d for d in found if d.severity is Severity.WATCHER]
    if watcher:
        return tuple(watcher)
    regions = {d.region for d in found if d.scope is Scope.REGION}
    zones = {d.zone for d in found if d.scope is Scope.ZONE}
    kept = []
    for d in found:
        if d.scope in (Scope.ZONE, Scope.INSTANCE) and d.region in regions:
            continue
        if d.scope is Scope.INSTANCE and d.zone in zones:
            continue
        kept.append(d)
    return tuple(kept)
