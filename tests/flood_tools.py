"""Floods for the intake tests: MQTT packets written straight to a socket by a child
process, as fast as the broker takes them (a Python MQTT client in the test's own process
would share the gateway's CPU and event loop, and send a hundred times slower).

``blast()`` starts the child with a file of ready-made PUBLISH packets; it connects
(MQTT 3.1.1), sends the file ``repeat`` times (or until stopped), then a PINGREQ, and exits
once the broker has answered it: everything before it has been taken by then.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str) -> bytes:
    body = _string(b"MQTT") + bytes([4, 0x02]) + (60).to_bytes(2, "big")
    body += _string(client_id.encode())
    return b"\x10" + _varint(len(body)) + body


def publish_packet(
    topic: str, payload: bytes, *, retain: bool = False, qos: int = 0, packet_id: int = 1
) -> bytes:
    body = _string(topic.encode())
    if qos:
        body += packet_id.to_bytes(2, "big")
    body += payload
    header = 0x30 | (qos << 1) | (1 if retain else 0)
    return bytes([header]) + _varint(len(body)) + body


def write_stream(
    path: Path, messages: Iterable[tuple[str, bytes]], *, retain: bool = False, qos: int = 0
) -> int:
    """Write PUBLISH packets for ``(topic, payload)`` pairs to ``path``; returns how many."""
    count = 0
    with path.open("wb") as out:
        for count, (topic, payload) in enumerate(messages, start=1):
            out.write(
                publish_packet(topic, payload, retain=retain, qos=qos, packet_id=count % 65535 + 1)
            )
    return count


# The child: connect, send the stream, PINGREQ, wait for PINGRESP. A reader thread drains
# what the broker sends back (PUBACKs of a QoS 1 flood) so that it never stalls on us.
_CHILD = r"""
import socket, sys, threading
host, port, client_id, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
repeat = int(sys.argv[5])
connect = bytes.fromhex(sys.argv[6])
sock = socket.create_connection((host, port))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
sock.sendall(connect)
ponged = threading.Event()
connacked = threading.Event()
def drain():
    buf = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return
        buf += data
        while len(buf) >= 2:
            n, mult, i = 0, 1, 1
            while True:
                if i >= len(buf):
                    break
                b = buf[i]; n += (b & 127) * mult; mult *= 128; i += 1
                if not b & 128:
                    break
            else:
                break
            if len(buf) < i + n:
                break
            kind = buf[0] >> 4
            buf = buf[i + n:]
            if kind == 2:
                connacked.set()
            if kind == 13:
                ponged.set()
threading.Thread(target=drain, daemon=True).start()
connacked.wait(10)
stream = open(path, "rb").read()
sent = 0
while repeat == 0 or sent < repeat:
    sock.sendall(stream)
    sent += 1
sock.sendall(b"\xc0\x00")
ponged.wait(60)
sock.sendall(b"\xe0\x00")
sock.close()
print(sent, flush=True)
"""


@dataclass
class Blast:
    process: subprocess.Popen[bytes]

    def wait(self, timeout_s: float = 120.0) -> None:
        """Until the broker has taken every packet (the child saw its PINGRESP)."""
        _out, err = self.process.communicate(timeout=timeout_s)
        if self.process.returncode != 0:
            raise AssertionError(f"flood child failed: {err.decode(errors='replace')}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def blast(host: str, port: int, client_id: str, stream: Path, *, repeat: int = 1) -> Blast:
    """Send ``stream`` (from ``write_stream``) ``repeat`` times; 0: until ``stop()``."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            host,
            str(port),
            client_id,
            str(stream),
            str(repeat),
            connect_packet(client_id).hex(),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return Blast(process)
