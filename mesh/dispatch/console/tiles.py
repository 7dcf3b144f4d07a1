"""The optional basemap: the agency's own tile server, as a URL template. Pure.

    https://tiles.agency.example/{z}/{x}/{y}.png

Nothing is fetched from anywhere unless one is configured; the page's Content-Security-
Policy then lets images come from that one origin besides the console's own.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_PLACEHOLDERS = ("{z}", "{x}", "{y}")
_MAX_LEN = 512
_ORIGIN_HOST = re.compile(r"^[A-Za-z0-9.-]+$")


def tile_origin(template: str) -> str:
    """The origin (``scheme://host[:port]``) of a tile URL template; raises ValueError
    naming the problem when the template is not one."""
    shown = template[:80]
    if len(template) > _MAX_LEN:
        raise ValueError(f"--map-tiles: longer than {_MAX_LEN} characters")
    parts = urlsplit(template)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--map-tiles {shown!r}: must start with https:// or http://")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"--map-tiles {shown!r}: no user or password in the URL")
    if not _ORIGIN_HOST.match(parts.hostname or "") and not parts.netloc.startswith("["):
        raise ValueError(f"--map-tiles {shown!r}: the host may not hold a placeholder")
    missing = [p for p in _PLACEHOLDERS if p not in template]
    if missing:
        raise ValueError(f"--map-tiles {shown!r}: missing {', '.join(missing)}")
    rest = template
    for placeholder in _PLACEHOLDERS:
        rest = rest.replace(placeholder, "")
    if "{" in rest or "}" in rest:
        raise ValueError(f"--map-tiles {shown!r}: only {{z}}, {{x}} and {{y}} may be in braces")
    # A quote or space would break out of the CSP header the origin goes into.
    if any(c in template for c in "'\" \t\r\n;,"):
        raise ValueError(f"--map-tiles {shown!r}: no quotes, spaces, ';' or ','")
    try:
        parts.port  # noqa: B018 (parsing it is the check)
    except ValueError:
        raise ValueError(f"--map-tiles {shown!r}: bad port") from None
    # No user info (refused above): the netloc is host[:port], as a CSP source wants it.
    return f"{parts.scheme}://{parts.netloc.lower()}"
