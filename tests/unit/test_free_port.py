"""Loopback ports for brokers and servers started by the tests and the demo: free, and
below the kernel's ephemeral range, where no client's own source port can be (a client
retrying a stopped broker's port inside that range can connect to itself, and the broker
then cannot listen there again)."""

from __future__ import annotations

import socket
from pathlib import Path

from bridge.mqtt.embedded import free_port, free_ports


def ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_free_ports_are_below_the_ephemeral_range_and_can_be_listened_on() -> None:
    ports = [free_port() for _ in range(20)] + free_ports(5)
    assert all(1024 < p < ephemeral_low() for p in ports), ports
    assert len(set(ports[-5:])) == 5
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))
        sock.listen()
