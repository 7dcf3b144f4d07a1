"""Is the broker there, and does it take us? What a one-shot command asks once, before it
starts its MQTT links (which would otherwise retry, warn and finally time out):

1. the TLS files of an mqtts:// URL can be read and used (if not: exit 2, naming the file);
2. a TCP connection (if not: exit 75, saying why);
3. one MQTT CONNECT on it (bridge/mqtt/probe.py): credentials refused (CONNACK 4 or 5), a
   broker certificate that does not verify or a TLS refusal is exit 2, a configuration
   problem that retrying would not solve; no answer is exit 75.
"""

from __future__ import annotations

import socket

from bridge.mqtt.probe import probe
from bridge.mqtt.urls import BrokerUrl, TlsFileError
from mesh.cli.errors import BrokerRefused, BrokerUnreachable, CliFailure

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


def check_tls_files(url: BrokerUrl) -> None:
    """The TLS files of ``url`` can be used, or CliFailure (exit 2) naming the file."""
    try:
        url.tls_context()
    except TlsFileError as exc:
        raise CliFailure(str(exc)) from None


def require_broker(url: BrokerUrl, timeout_s: float = CONNECT_TIMEOUT_S) -> BrokerUrl:
    """``url`` if its broker accepts an MQTT connection with its credentials; otherwise a
    CliFailure (2: a TLS file, credentials or TLS refused) or BrokerUnreachable (75)
    saying why. A URL naming several nodes needs one that accepts; a refusal by any is
    a configuration problem and says so at once."""
    check_tls_files(url)
    unreachable: list[BrokerUnreachable] = []
    for index in range(len(url.addresses)):
        try:
            _require_node(url.at(index), timeout_s)
        except BrokerUnreachable as exc:
            unreachable.append(exc)
            continue
        return url
    if len(unreachable) == 1:
        raise unreachable[0]
    raise BrokerUnreachable(str(url), "; ".join(f"{e.where}: {e.reason}" for e in unreachable))


def _require_node(url: BrokerUrl, timeout_s: float) -> None:
    try:
        sock = socket.create_connection((url.host, url.port), timeout=timeout_s)
    except OSError as exc:
        raise BrokerUnreachable(f"{url.host}:{url.port}", why_unreachable(exc, timeout_s)) from None
    answer = probe(sock, url, timeout_s)
    if answer.outcome == "refused":
        who = f"user {url.username!r}" if url.username else "no user name in the broker URL"
        raise BrokerRefused(str(url), f"{who}: {answer.detail}")
    if answer.outcome == "tls_refused":
        raise BrokerRefused(str(url), answer.detail)
    if answer.outcome == "untrusted":
        raise CliFailure(f"the MQTT broker at {url} is not trusted: {answer.detail}")
    if answer.outcome == "unavailable":
        raise BrokerUnreachable(str(url), answer.detail)
