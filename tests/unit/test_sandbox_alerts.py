"""The sandbox can point its daemon at Alertmanager: the written config and the CLI flag."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from drwatch import config
from drwatch.sandbox.topology import default_topology
from drwatch.sandbox.watcher import WorldAddresses, render_config


def _where(tmp_path: Path, alertmanagers: tuple[str, ...]) -> WorldAddresses:
    return WorldAddresses(
        listen="127.0.0.1:9480",
        state_dir=tmp_path / "daemon",
        secret_file=tmp_path / "agent.secret",
        endpoints={"us-east-1": "http://127.0.0.1:1001", "eu-west-1": "http://127.0.0.1:1002"},
        service_url="http://127.0.0.1:1003/app/healthz",
        canaries={"canary-1": "http://127.0.0.1:1004/"},
        alertmanager_urls=alertmanagers,
    )


def test_alertmanager_urls_go_into_the_alerts_section(tmp_path: Path) -> None:
    """Every given Alertmanager is a receiver; alert links point at the sandbox status page."""
    urls = ("http://127.0.0.1:9093", "http://127.0.0.1:9094")
    cfg = config.parse(tomllib.loads(render_config(default_topology(), _where(tmp_path, urls))))
    assert [str(u).rstrip("/") for u in cfg.alerts.alertmanager_urls] == list(urls)
    assert str(cfg.alerts.external_url) == "http://127.0.0.1:9480/"


def test_no_alertmanager_means_no_alerts_section(tmp_path: Path) -> None:
    """Without --alertmanager the sandbox daemon sends no alerts, as before."""
    text = render_config(default_topology(), _where(tmp_path, ()))
    assert "[alerts]" not in text
    assert config.parse(tomllib.loads(text)).alerts.alertmanager_urls == []


def test_a_bad_alertmanager_url_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """`drwatch sandbox --alertmanager` with a non-HTTP URL exits 2 and starts nothing."""
    state = tmp_path / "sb"
    result = subprocess.run(
        [sys.executable, "-m", "drwatch.cli", "sandbox", "--state-dir", str(state),
         "--alertmanager", "ftp://127.0.0.1:9093"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--alertmanager" in result.stderr
    assert "ftp://127.0.0.1:9093" in result.stderr
    assert not state.exists()
