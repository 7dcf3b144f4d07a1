"""Is the broker there? A TCP connection tried once, before a one-shot command starts
its MQTT links (which would otherwise retry, warn and finally time out)."""

from __future__ import annotations

import socket

from bridge.mqtt.urls import BrokerUrl
from mesh.cli.errors import BrokerUnreachable

CONNECT_TIMEOUT_S = 5.0


def why_unreachable(exc: OSError, timeout_s: float) -> str:
    """What a failed connect means, in a few words."""
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})" if exc.strerror else "unknown host"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def require_broker(url: BrokerUrl, timeout_s: float = CONNECT_TIMEOUT_S) -> BrokerUrl:
    """``url`` if a TCP connection to it succeeds; BrokerUnreachable saying why if not."""
    try:
        socket.create_connection((url.host, url.port), timeout=timeout_s).close()
    except OSError as exc:
        raise BrokerUnreachable(f"{url.host}:{url.port}", why_unreachable(exc, timeout_s)) from None
    return url
