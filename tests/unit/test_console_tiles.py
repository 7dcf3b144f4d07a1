"""The basemap's tile URL template (--map-tiles) and the page's CSP built from it."""

from __future__ import annotations

import pytest

from mesh.dispatch.console.app import page_headers
from mesh.dispatch.console.tiles import tile_origin


@pytest.mark.parametrize(
    ("template", "origin"),
    [
        ("https://tiles.agency.example/{z}/{x}/{y}.png", "https://tiles.agency.example"),
        ("http://127.0.0.1:8081/osm/{z}/{x}/{y}.png", "http://127.0.0.1:8081"),
        ("https://Tiles.Example:8443/{y}/{x}/{z}", "https://tiles.example:8443"),
        # An empty port is the scheme's default: the CSP source has none ("host:" is invalid).
        ("https://tiles.example:/{z}/{x}/{y}.png", "https://tiles.example"),
        ("http://10.1.2.3:080/{z}/{x}/{y}.png", "http://10.1.2.3:80"),
    ],
)
def test_the_origin_of_a_template(template: str, origin: str) -> None:
    assert tile_origin(template) == origin


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("ftp://tiles.example/{z}/{x}/{y}", "must start with https:// or http://"),
        ("tiles.example/{z}/{x}/{y}", "must start with https:// or http://"),
        ("https://{s}.tiles.example/{z}/{x}/{y}.png", "the host may not hold a placeholder"),
        ("https://u:p@tiles.example/{z}/{x}/{y}", "no user or password"),
        ("https://tiles.example/{z}/{x}.png", "missing {y}"),
        ("https://tiles.example/{z}/{x}/{y}?key={key}", "only {z}, {x} and {y}"),
        ("https://tiles.example:99999/{z}/{x}/{y}", "bad port"),
        ("https://tiles.example/{z}/{x}/{y}';script-src", "no quotes, spaces"),
        ("https://tiles.example/" + "a" * 600 + "/{z}/{x}/{y}", "longer than 512"),
        ("https://tiles.example:8x/{z}/{x}/{y}", "bad port"),
        ("https://tiles.example:0/{z}/{x}/{y}", "bad port"),
        ("https://tiles..example/{z}/{x}/{y}", "malformed host 'tiles..example'"),
        ("https://tiles_1.example/{z}/{x}/{y}", "malformed host 'tiles_1.example'"),
        # Bracketed hosts: an IPv6 address is no CSP source (Chromium ignores it); the
        # others are not even addresses, or have something after the bracket.
        ("http://[::1]:8080/{z}/{x}/{y}.png", "an IPv6 address cannot be named"),
        ("http://[2001:DB8::1]/{z}/{x}/{y}.png", "give the tile server a host name"),
        ("http://[::1/{z}/{x}/{y}.png", "malformed host (Invalid IPv6 URL)"),
        ("http://[{z}]/{z}/{x}/{y}.png", "malformed host"),
        ("http://[v1.fe]/{z}/{x}/{y}.png", "malformed host '[v1.fe]'"),
        ("http://[::1]x:8080/{z}/{x}/{y}.png", "malformed host '[::1]x:8080'"),
        ("http://x[::1]/{z}/{x}/{y}.png", "malformed host 'x[::1]'"),
        ("http://[::1]]/{z}/{x}/{y}.png", "malformed host"),
        ("http://::1:8080/{z}/{x}/{y}.png", "malformed host '::1:8080'"),
    ],
)
def test_a_bad_template_is_refused_naming_the_problem(template: str, problem: str) -> None:
    with pytest.raises(ValueError, match="--map-tiles") as raised:
        tile_origin(template)
    assert problem in str(raised.value)


def test_the_page_loads_everything_from_the_console_and_tiles_from_the_tile_server() -> None:
    assert page_headers(None)["Content-Security-Policy"] == (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; script-src 'self'; "
        "style-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )
    policy = page_headers("https://tiles.example")["Content-Security-Policy"]
    assert "; img-src 'self' data: https://tiles.example; " in policy
    assert "unsafe" not in policy
