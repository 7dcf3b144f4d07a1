"""Broker URLs: ``mqtt://[user[:pass]@]host[:port]`` and ``mqtts://…?ca=&cert=&key=``.

A URL may name several nodes of one clustered broker, comma-separated:
``mqtts://user:pass@node1:8883,node2:8883,node3?ca=…``. They share the scheme, the
credentials and the TLS files; a link connects to the first and moves to the next when a
connection fails or is lost (``BrokerUrl.addresses``).
"""

from __future__ import annotations

import dataclasses
import re
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_TLS_KEYS = {"ca", "cert", "key"}
# Nodes in one URL, at most: a cluster's, not a list to scan.
MAX_ADDRESSES = 16


class TlsFileError(ValueError):
    """A TLS file named by a broker URL (``?ca=``, ``cert=``, ``key=``) that cannot be read
    or used; the message names the URL, the option and the file."""


@dataclass(frozen=True)
class BrokerUrl:
    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # Further nodes of the same broker (host, port), tried in turn after ``host:port``.
    failover: tuple[tuple[str, int], ...] = ()

    @classmethod
    def parse(cls, text: str) -> BrokerUrl:
        """Parse a broker URL or raise ValueError saying what is wrong with it (quoting
        the URL with any password masked: these messages end up in logs)."""
        shown = _masked(text)
        first, others = _split_hosts(text.strip())
        if len(others) >= MAX_ADDRESSES:
            raise ValueError(f"broker URL {shown!r}: more than {MAX_ADDRESSES} hosts")
        try:
            parts = urlsplit(first)
        except ValueError as exc:  # an unclosed IPv6 bracket, say
            raise ValueError(f"broker URL {shown!r}: {exc}") from None
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(f"broker URL {shown!r}: scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError(f"broker URL {shown!r}: no host")
        try:
            port = DEFAULT_PORTS[parts.scheme] if parts.port is None else parts.port
        except ValueError:
            raise ValueError(f"broker URL {shown!r}: port is not a number in 1-65535") from None
        if port == 0:
            raise ValueError(f"broker URL {shown!r}: port is not a number in 1-65535")
        if parts.path not in ("", "/"):
            raise ValueError(f"broker URL {shown!r}: unexpected path {parts.path!r}")
        query = parse_qs(parts.query, strict_parsing=False)
        unknown = set(query) - _TLS_KEYS
        if unknown:
            raise ValueError(f"broker URL {shown!r}: unknown option(s) {sorted(unknown)}")
        if query and parts.scheme != "mqtts":
            raise ValueError(f"broker URL {shown!r}: ca/cert/key need mqtts://")
        failover = tuple(_address(shown, other, DEFAULT_PORTS[parts.scheme]) for other in others)
        return cls(
            scheme=parts.scheme,
            host=parts.hostname,
            port=port,
            failover=failover,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ca_file=query.get("ca", [None])[-1],
            cert_file=query.get("cert", [None])[-1],
            key_file=query.get("key", [None])[-1],
        )

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        """Every node this URL names, (host, port), in the order they are tried."""
        return ((self.host, self.port), *self.failover)

    def at(self, index: int) -> BrokerUrl:
        """This URL for its ``index``-th address alone (credentials and TLS files kept)."""
        host, port = self.addresses[index]
        return dataclasses.replace(self, host=host, port=port, failover=())

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    def tls_context(self) -> ssl.SSLContext | None:
        """A verifying client context (hostname checks on), or None for plain mqtt://.

        TlsFileError (a ValueError) names the ``ca``, ``cert`` or ``key`` file that cannot
        be read or is not what it should be."""
        if not self.tls:
            return None
        for option, path in (
            ("ca", self.ca_file),
            ("cert", self.cert_file),
            ("key", self.key_file),
        ):
            if path is not None:
                _readable(self, option, path)
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            where = f"ca={self.ca_file}" if self.ca_file else "the system's CA certificates"
            raise TlsFileError(f"broker URL {self}: {where}: {_ssl_reason(exc)}") from None
        if self.cert_file:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (ssl.SSLError, OSError, ValueError) as exc:
                files = f"cert={self.cert_file}" + (
                    f", key={self.key_file}" if self.key_file else ""
                )
                raise TlsFileError(f"broker URL {self}: {files}: {_ssl_reason(exc)}") from None
        return context

    def as_text(self) -> str:
        """The whole URL, password and TLS files included: what ``parse`` reads back
        (``str()`` is the printable form, without them)."""
        auth = ""
        if self.username is not None:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        files = {"ca": self.ca_file, "cert": self.cert_file, "key": self.key_file}
        query = urlencode({k: v for k, v in files.items() if v is not None}, safe="/")
        return f"{self.scheme}://{auth}{self._hosts()}" + (f"?{query}" if query else "")

    def __str__(self) -> str:
        auth = f"{self.username}@" if self.username else ""
        return f"{self.scheme}://{auth}{self._hosts()}"

    def _hosts(self) -> str:
        return ",".join(
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in self.addresses
        )


def _split_hosts(text: str) -> tuple[str, list[str]]:
    """``text`` with only its first host, and the further ``host[:port]`` items of a
    comma-separated host list."""
    head, authority, tail = _authority(text)
    credentials, at, hosts = authority.rpartition("@")
    if "," not in hosts:
        return text, []
    first, *others = hosts.split(",")
    return f"{head}{credentials}{at}{first}{tail}", others


def _authority(text: str) -> tuple[str, str, str]:
    """``text`` as (``scheme://``, its authority, the rest)."""
    scheme, sep, rest = text.partition("://")
    authority_end = len(rest)
    for stop in "/?#":
        index = rest.find(stop)
        if index != -1:
            authority_end = min(authority_end, index)
    return f"{scheme}{sep}", rest[:authority_end], rest[authority_end:]


def _address(shown: str, item: str, default_port: int) -> tuple[str, int]:
    """One further ``host[:port]`` (``[v6]:port`` for IPv6) of a host list."""
    try:
        parts = urlsplit(f"//{item}")
        port = default_port if parts.port is None else parts.port
    except ValueError:
        raise ValueError(
            f"broker URL {shown!r}: host {item!r}: port is not a number in 1-65535"
        ) from None
    if not parts.hostname or parts.username is not None or port == 0:
        raise ValueError(f"broker URL {shown!r}: host {item!r} is not host[:port]")
    return parts.hostname, port


def _masked(text: str) -> str:
    """``text`` with the password of its ``user:password@`` part replaced by ``***``."""
    head, authority, tail = _authority(text)
    if "@" not in authority:
        return text
    credentials, _, host = authority.rpartition("@")
    user, colon, _password = credentials.partition(":")
    masked = f"{user}:***" if colon else user
    return f"{head}{masked}@{host}{tail}"


def _readable(url: BrokerUrl, option: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TlsFileError(f"broker URL {url}: {option}={path}: {reason}") from None


def _ssl_reason(exc: BaseException) -> str:
    """OpenSSL's words for what is wrong with a file ("no certificate or crl found")."""
    if isinstance(exc, ssl.SSLError):
        if exc.reason:
            library = f"{exc.library}: " if exc.library else ""
            return f"not usable ({library}{exc.reason})"
        text = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], str) else str(exc)
        return f"not usable ({re.sub(r' [(]_ssl[.]c:[0-9]+[)]$', '', text)})"
    return str(exc) or type(exc).__name__
