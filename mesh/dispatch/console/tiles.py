"""The optional basemap: the agency's own tile server, as a URL template. Pure.

    https://tiles.agency.example/{z}/{x}/{y}.png

Nothing is fetched from anywhere unless one is configured; the page's Content-Security-
Policy then lets images come from that one origin besides the console's own. The origin
goes into the policy as a CSP host-source, whose grammar knows host names and IPv4
addresses only: an IPv6 address (``http://[::1]:8080/…``) is not a valid source, and
Chromium ignores it ("contains an invalid source … It will be ignored"), so no tile would
ever load. Such a template is refused, saying to name the server by a host name.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_PLACEHOLDERS = ("{z}", "{x}", "{y}")
_MAX_LEN = 512
# host[:port] once the user info is refused: a bracketed host, or one without brackets or
# colons; the port, if any, is checked apart (a bad one is named as such).
_NETLOC = re.compile(r"^(?P<host>\[[^\[\]]*\]|[^\[\]:]*)(?::(?P<port>[^:]*))?$")
# A CSP host-source's host: labels of letters, digits and '-' (IPv4 addresses are such).
_HOST = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)*$")


def tile_origin(template: str) -> str:
    """The origin (``scheme://host[:port]``) of a tile URL template, as a CSP source;
    raises ValueError naming the problem when the template is not one."""
    shown = template[:80]
    if len(template) > _MAX_LEN:
        raise ValueError(f"--map-tiles: longer than {_MAX_LEN} characters")
    try:
        parts = urlsplit(template)
    except ValueError as exc:  # an unclosed '[', a bracketed host that is no address
        raise ValueError(f"--map-tiles {shown!r}: malformed host ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--map-tiles {shown!r}: must start with https:// or http://")
    if "@" in parts.netloc:
        raise ValueError(f"--map-tiles {shown!r}: no user or password in the URL")
    host, port = _host_and_port(parts.netloc, shown)
    missing = [p for p in _PLACEHOLDERS if p not in template]
    if missing:
        raise ValueError(f"--map-tiles {shown!r}: missing {', '.join(missing)}")
    rest = template
    for placeholder in _PLACEHOLDERS:
        rest = rest.replace(placeholder, "")
    if "{" in rest or "}" in rest:
        raise ValueError(f"--map-tiles {shown!r}: only {{z}}, {{x}} and {{y}} may be in braces")
    # The origin is rebuilt from checked parts; the template itself goes to the page, where
    # a quote or space has no business either.
    if any(c in template for c in "'\" \t\r\n;,"):
        raise ValueError(f"--map-tiles {shown!r}: no quotes, spaces, ';' or ','")
    return f"{parts.scheme}://{host}" + ("" if port is None else f":{port}")


def _host_and_port(netloc: str, shown: str) -> tuple[str, int | None]:
    """The host (lower case) and port of ``netloc``; ValueError naming what is wrong."""
    found = _NETLOC.match(netloc)
    if found is None:
        raise ValueError(f"--map-tiles {shown!r}: malformed host {netloc!r}")
    host, port_text = found.group("host").lower(), found.group("port")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"--map-tiles {shown!r}: malformed host {host!r}") from None
        raise ValueError(
            f"--map-tiles {shown!r}: an IPv6 address cannot be named in the page's "
            "Content-Security-Policy (browsers ignore it, and no tile would load): give the "
            "tile server a host name (DNS or /etc/hosts)"
        )
    if "{" in host or "}" in host:
        raise ValueError(f"--map-tiles {shown!r}: the host may not hold a placeholder")
    if not _HOST.match(host):
        raise ValueError(f"--map-tiles {shown!r}: malformed host {host!r}")
    if not port_text:  # none, or "host:" (the scheme's default port)
        return host, None
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"--map-tiles {shown!r}: bad port")
    return host, int(port_text)
