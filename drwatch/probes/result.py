"""What a probe found, before it becomes an `Observation` of some target and layer."""

from __future__ import annotations

from dataclasses import dataclass

from drwatch.model.observation import Health, Layer, Observation


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's verdict. `reason` is short and operator-facing ("status 500, want 200")."""

    health: Health
    reason: str = ""
    latency_s: float | None = None
    status: int | None = None

    def observation(self, target: str, layer: Layer, attempted_at: float) -> Observation:
        """The observation of `target` on `layer`; `ok_at` is set only when this probe passed."""
        up = self.health is Health.UP
        return Observation(
            target=target,
            layer=layer,
            health=self.health,
            attempted_at=attempted_at,
            ok_at=attempted_at if up else None,
            reason=self.reason,
            latency_s=self.latency_s,
        )


def seconds(value: float) -> str:
    """Seconds as reasons show them: 2.0 -> '2s', 0.8123 -> '0.812s'."""
    return f"{value:.3g}s"
