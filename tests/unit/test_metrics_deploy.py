"""The deploy files speak of series drwatch really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from drwatch.backup.metrics import BackupMetrics
from drwatch.web.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_NAME = re.compile(r"\bdrwatch_[a-z0-9_]+")
_SUFFIXES = ("_bucket", "_count", "_sum", "_created")


def _exported() -> set[str]:
    metrics = Metrics(process_metrics=False)
    BackupMetrics(metrics.registry)  # registered by the daemon when [backup] is configured
    text = metrics.exposition().decode()
    names = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    # Counters are typed under their base name; samples carry the _total suffix.
    return names | {n + "_total" for n in names} | {n + "_info" for n in names}


def _referenced(text: str) -> set[str]:
    out = set()
    for found in _NAME.findall(text):
        base = found
        for suffix in _SUFFIXES:
            base = base.removesuffix(suffix)
        out.add(base)
    return out


@pytest.mark.parametrize("path", ["drwatch.rules.yml", "grafana-dashboard.json"])
def test_every_referenced_series_exists(path: str) -> None:
    """A rule or panel naming a series drwatch does not export would stay silent forever."""
    referenced = _referenced((DEPLOY / path).read_text())
    assert referenced, "the file names no drwatch series at all"
    assert referenced <= _exported(), sorted(referenced - _exported())


def test_dashboard_panels_have_queries() -> None:
    """Every dashboard panel queries Prometheus through the dashboard's datasource variable."""
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert dash["panels"]
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
