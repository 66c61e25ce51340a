"""The sandbox's port picker: below the ephemeral range, and never the same port twice."""

from __future__ import annotations

import socket

from drwatch.sandbox import world


def test_free_port_never_hands_out_a_port_twice() -> None:
    """Hosts bind their ports only when they boot, so "free right now" is not enough: two
    hosts that drew the same port would fight over it. 3,000 draws from a range of about
    20,000 ports collide with near certainty unless the picker remembers what it gave."""
    ports = [world.free_port() for _ in range(3000)]
    assert len(set(ports)) == len(ports)


def test_free_port_is_below_the_ephemeral_range_and_bindable() -> None:
    port = world.free_port()
    assert 1024 <= port < world._ephemeral_low()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
