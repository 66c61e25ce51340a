"""Alerts: drwatch's open incidents pushed to every Alertmanager replica and a JSON webhook.

The daemon maps its incidents to `AlertInput` values and hands the whole current list
to `Alerter.update()` on every tick; the alerter works out what fired, changed and
resolved, and delivers from its own tasks, so a slow or failing receiver never slows
the loop.
"""

from drwatch.alerts.alerter import Alerter, AlertMetrics, NullAlertMetrics
from drwatch.alerts.model import (
    ALERT_BY_SCOPE,
    AlertInput,
    alert_for_incident,
    incident_alert,
    watcher_impaired_alert,
)
from drwatch.alerts.sinks import AlertmanagerSink, DeliveryError, Sink, WebhookSink

__all__ = [
    "ALERT_BY_SCOPE",
    "AlertInput",
    "AlertMetrics",
    "Alerter",
    "AlertmanagerSink",
    "DeliveryError",
    "NullAlertMetrics",
    "Sink",
    "WebhookSink",
    "alert_for_incident",
    "incident_alert",
    "watcher_impaired_alert",
]
