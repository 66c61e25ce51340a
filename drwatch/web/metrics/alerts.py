"""Alert delivery: batches delivered, attempts failed and batches dropped, by receiver."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class AlertSeries:
    """`drwatch_alert_deliveries_total`, `drwatch_alert_delivery_failures_total` and
    `drwatch_alert_dropped_total`."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "drwatch_alert_deliveries_total",
            "Alert batches delivered, by receiver.",
            ["receiver"],
            registry=r,
        )
        self.failures = Counter(
            "drwatch_alert_delivery_failures_total",
            "Failed alert delivery attempts (each retry counts), by receiver.",
            ["receiver"],
            registry=r,
        )
        self.dropped = Counter(
            "drwatch_alert_dropped_total",
            "Alert batches dropped because the receiver's queue was full, by receiver.",
            ["receiver"],
            registry=r,
        )
