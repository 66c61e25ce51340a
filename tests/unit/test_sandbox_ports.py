"""The sandbox's port picker: below the ephemeral range, and never the same port twice."""

from __future__ import annotations

import socket

import pytest

from drwatch.sandbox import world
from drwatch.sandbox.cloud import SandboxError


@pytest.fixture(autouse=True)
def _own_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests draw thousands of ports: they draw them into a ledger of their own, so
    the ports stay available to the sandboxes that later tests in this worker start. (With
    the process-wide ledger, the 3,000 draws below used up a worker's whole slice and every
    sandbox after them failed with "no free loopback port".)"""
    monkeypatch.setattr(world, "_handed_out", set())


def test_free_port_never_hands_out_a_port_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hosts bind their ports only when they boot, so "free right now" is not enough: two
    hosts that drew the same port would fight over it. 3,000 draws from a range of about
    20,000 ports collide with near certainty unless the picker remembers what it gave."""
    monkeypatch.delenv(world.PORTS_ENV, raising=False)
    ports = [world.free_port() for _ in range(3000)]
    assert len(set(ports)) == len(ports)


def test_free_port_is_below_the_ephemeral_range_and_bindable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(world.PORTS_ENV, raising=False)
    port = world.free_port()
    assert 1024 <= port < world._ephemeral_low()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_free_port_keeps_to_the_slice_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sandboxes side by side each draw from their own slice (DRWATCH_SANDBOX_PORTS)."""
    monkeypatch.setenv(world.PORTS_ENV, "30000-30199")
    ports = {world.free_port() for _ in range(50)}
    assert all(30000 <= p <= 30199 for p in ports), sorted(ports)


@pytest.mark.parametrize("spec", ["30000", "x-y", "3000-2000", "80-9000", "30000-70000"])
def test_a_bad_port_slice_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    monkeypatch.setenv(world.PORTS_ENV, spec)
    with pytest.raises(SandboxError, match="DRWATCH_SANDBOX_PORTS"):
        world.free_port()
