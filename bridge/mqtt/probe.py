"""One MQTT CONNECT and its answer: how a one-shot command learns, before it starts links
that would retry for ever, whether the broker takes its credentials.

The CONNECT is MQTT 3.1.1, which every broker answers (mosquitto and other MQTT 5 brokers
too; amqtt never answers an MQTT 5 CONNECT), with a client id of its own and a clean
session: it disturbs no other client's session. Accepted, it is closed with a DISCONNECT.
Blocking, on a socket the caller has connected (mesh/cli/reach.py says why that failed).
"""

from __future__ import annotations

import secrets
import select
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Literal

from bridge.mqtt.urls import BrokerUrl

# MQTT 3.1.1, 3.2.2.3: the CONNACK return codes.
CONNACK_ACCEPTED = 0
CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
# Refusals of who we are: retrying with the same credentials cannot help.
CREDENTIALS_REFUSED = frozenset({4, 5})
_CONNACK = 0x20
_DISCONNECT = b"\xe0\x00"
PROBE_KEEPALIVE_S = 10
# How long to wait, after a TLS 1.3 handshake, for the broker's verdict on our certificate
# (it comes at once: a round trip; a broker that sends no session tickets costs this).
TLS13_VERDICT_WAIT_S = 0.5

Outcome = Literal["accepted", "refused", "untrusted", "tls_refused", "unavailable"]


@dataclass(frozen=True)
class ProbeAnswer:
    """What the broker said. ``accepted``: a CONNACK that lets us in (or one that only
    refuses the protocol version: a broker is there, and the links speak MQTT 5);
    ``refused``: a CONNACK refusing the credentials (``code`` 4 or 5); ``untrusted``: the
    broker's certificate does not verify; ``tls_refused``: the broker refused our TLS (no
    client certificate, one it does not trust, a handshake that cannot work);
    ``unavailable``: no CONNACK (a timeout, a closed connection, something that is not an
    MQTT broker, or a broker that says it is unavailable). ``detail`` says it in a few words.
    """

    outcome: Outcome
    detail: str
    code: int | None = None


def connect_packet(
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    keepalive_s: int = PROBE_KEEPALIVE_S,
) -> bytes:
    """An MQTT 3.1.1 CONNECT with a clean session (a password only with a user name, as
    3.1.1 requires)."""
    flags = 0x02  # clean session
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    body = _string("MQTT") + bytes([4, flags]) + keepalive_s.to_bytes(2, "big") + payload
    return bytes([0x10]) + _remaining_length(len(body)) + body


def probe(sock: socket.socket, url: BrokerUrl, timeout_s: float) -> ProbeAnswer:
    """Send one CONNECT on ``sock`` (connected to ``url``'s host and port; TLS is started
    here for mqtts://) and read the CONNACK, within ``timeout_s`` in all. Closes ``sock``."""
    deadline = time.monotonic() + timeout_s
    conn: socket.socket = sock
    try:
        early = b""
        if url.tls:
            started = _start_tls(sock, url, deadline)
            if isinstance(started, ProbeAnswer):
                return started
            conn, early = started
        conn.settimeout(_left(deadline))
        conn.sendall(connect_packet(f"tm-probe-{secrets.token_hex(4)}", url.username, url.password))
        answer = early + _read(conn, 4 - len(early), deadline)
        if len(answer) < 4:
            return ProbeAnswer("unavailable", "connection closed before the MQTT CONNACK")
        if answer[0] != _CONNACK or answer[1] != 2:
            return ProbeAnswer("unavailable", f"not an MQTT answer (0x{answer[:4].hex()})")
        found = _connack(answer[3])
        if found.code == CONNACK_ACCEPTED:
            conn.sendall(_DISCONNECT)
        return found
    except TimeoutError:
        return ProbeAnswer("unavailable", f"no MQTT answer within {timeout_s:g} s")
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return ProbeAnswer("unavailable", "connection closed during TLS")
    except ssl.SSLError as exc:
        # An alert from the broker (no client certificate, one from another CA) or a
        # handshake that cannot work (a plain-MQTT port): not a matter of time.
        return ProbeAnswer("tls_refused", f"TLS failed: {exc.reason or exc}")
    except OSError as exc:
        text = exc.strerror or str(exc) or type(exc).__name__
        return ProbeAnswer("unavailable", text[:1].lower() + text[1:])
    finally:
        conn.close()


def _connack(code: int) -> ProbeAnswer:
    """What a CONNACK's return code means for the command."""
    if code in (CONNACK_ACCEPTED, 1):  # 1: 3.1.1 refused, the broker is there (MQTT 5)
        return ProbeAnswer("accepted", "connected", code)
    reason = f"{CONNACK_REASONS.get(code, 'refused')} (CONNACK return code {code})"
    return ProbeAnswer("refused" if code in CREDENTIALS_REFUSED else "unavailable", reason, code)


def _start_tls(
    sock: socket.socket, url: BrokerUrl, deadline: float
) -> tuple[ssl.SSLSocket, bytes] | ProbeAnswer:
    """The TLS connection and any bytes the broker sent right after the handshake, or the
    answer when TLS did not start (SSLErrors other than verification: the caller's)."""
    context = url.tls_context()
    assert context is not None
    sock.settimeout(_left(deadline))
    try:
        conn = context.wrap_socket(sock, server_hostname=url.host)
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or exc.reason or str(exc)
        return ProbeAnswer("untrusted", f"its certificate does not verify: {reason}")
    except ConnectionError:
        return ProbeAnswer("unavailable", "connection closed during the TLS handshake")
    try:
        return conn, _after_handshake(conn, deadline)
    except BaseException:
        conn.close()
        raise


def _after_handshake(conn: ssl.SSLSocket, deadline: float) -> bytes:
    """Under TLS 1.3 the broker judges our certificate after the handshake and says so at
    once: an alert (refused) or its session tickets (accepted). Wait for either, briefly,
    before sending: a CONNECT that meets the closed connection gets a reset, which loses
    the alert ("connection closed" instead of "certificate required"). Returns any bytes
    of the broker's that came with them (none from an MQTT broker before our CONNECT)."""
    if conn.version() != "TLSv1.3":
        return b""  # TLS 1.2 refuses a certificate within the handshake
    ready, _, _ = select.select([conn], [], [], min(TLS13_VERDICT_WAIT_S, _left(deadline)))
    if not ready:
        return b""  # a broker that sends no tickets
    conn.setblocking(False)
    try:
        return conn.recv(4)  # an alert raises its SSLError; b"": closed
    except ssl.SSLWantReadError:
        return b""  # tickets only: accepted
    finally:
        conn.settimeout(_left(deadline))


def _read(conn: socket.socket, size: int, deadline: float) -> bytes:
    data = b""
    while len(data) < size:
        conn.settimeout(_left(deadline))
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _string(value: str) -> bytes:
    data = value.encode()
    return len(data).to_bytes(2, "big") + data


def _remaining_length(length: int) -> bytes:
    """MQTT's variable-length integer (1 to 4 bytes, 7 bits each)."""
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)
