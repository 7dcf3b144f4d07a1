"""The console's Content-Security-Policy, enforced by Chromium (no bypass_csp anywhere): the
page itself runs under it without a single violation, and what an injection would bring in
is refused and reported: an inline script, an inline style, an image from another origin
than the console's and the tile server's, a request to another origin. And why a tile
server named by an IPv6 address is refused at start: Chromium ignores such a source.

A violation is observed as Chromium reports it to the page (`securitypolicyviolation`), and
by the other origin's server, which must see no request at all."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.dispatch.console.app import page_headers
from mesh.dispatch.console.auth import Role, add_user
from tests.conftest import CHROMIUM_ARGS
from tests.integration.test_console_map_e2e import _png, console_with, tile_server

# Every violation Chromium reports to the page, from its first script on.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push({ directive: e.effectiveDirective, blocked: e.blockedURI });
});
"""

# Each attack resolves with what happened first: the violation Chromium reports, or the
# injected thing taking effect (which the policy must prevent).
INLINE_SCRIPT = """() => new Promise((resolve) => {
  document.addEventListener("securitypolicyviolation",
    (e) => resolve({ directive: e.effectiveDirective, blocked: e.blockedURI }), { once: true });
  const script = document.createElement("script");
  script.textContent = "window.__injected = true;";
  document.body.append(script);  // an inline script runs right here, if it may
  if (window.__injected) resolve({ ran: true });
})"""

INLINE_STYLE = """() => new Promise((resolve) => {
  document.addEventListener("securitypolicyviolation",
    (e) => resolve({ directive: e.effectiveDirective, blocked: e.blockedURI }), { once: true });
  const style = document.createElement("style");
  style.textContent = "body { outline: 7px solid rgb(255, 0, 0); }";
  document.head.append(style);
  if (getComputedStyle(document.body).outlineWidth === "7px") resolve({ applied: true });
})"""

IMAGE = """(url) => new Promise((resolve) => {
  document.addEventListener("securitypolicyviolation",
    (e) => resolve({ directive: e.effectiveDirective, blocked: e.blockedURI }), { once: true });
  const img = new Image();
  img.src = url;
  img.decode().then(() => resolve({ loaded: img.naturalWidth }), () => {});
})"""

FETCH = """(url) => new Promise((resolve) => {
  document.addEventListener("securitypolicyviolation",
    (e) => resolve({ directive: e.effectiveDirective, blocked: e.blockedURI }), { once: true });
  fetch(url, { mode: "no-cors" }).then(() => resolve({ fetched: true }), () => {});
})"""


async def _browser(pw: Any, chromium: str) -> Any:
    return await pw.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))


async def test_the_page_runs_under_its_policy_and_an_injection_is_refused(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, chromium: str
) -> None:
    from playwright.async_api import async_playwright

    with tile_server() as (tiles, tiles_asked), tile_server() as (elsewhere, elsewhere_asked):
        tile = tiles.format(z=1, x=0, y=1)
        other = elsewhere.format(z=1, x=0, y=1)
        tiles_origin = "{0.scheme}://{0.netloc}".format(urlsplit(tiles))
        async with (
            console_with(mosquitto.url, topics, tmp_path, tiles) as base,
            async_playwright() as pw,
        ):
            browser = await _browser(pw, chromium)
            try:
                context = await browser.new_context(
                    http_credentials={"username": "alice", "password": "alice-pass"}
                )
                await context.add_init_script(RECORD_VIOLATIONS)
                page = await context.new_page()
                response = await page.goto(base + "/")
                assert response is not None
                expected = page_headers(tiles_origin)["Content-Security-Policy"]
                assert await response.header_value("content-security-policy") == expected
                assert f"img-src 'self' data: {tiles_origin};" in expected
                # The page works under it: scripts ran (live over the event stream, state
                # fetched), its style sheet applies, and nothing of its own was refused.
                await page.wait_for_selector("#conn.up", timeout=10_000)
                assert await page.evaluate("getComputedStyle(document.body).marginTop") == "0px"
                assert await page.evaluate("window.__violations") == []
                # The tile server's images load.
                assert await page.evaluate(IMAGE, tile) == {"loaded": 256}

                assert await page.evaluate(INLINE_SCRIPT) == {
                    "directive": "script-src-elem",
                    "blocked": "inline",
                }
                assert await page.evaluate("window.__injected") is None
                assert await page.evaluate(INLINE_STYLE) == {
                    "directive": "style-src-elem",
                    "blocked": "inline",
                }
                assert await page.evaluate(IMAGE, other) == {
                    "directive": "img-src",
                    "blocked": other,
                }
                assert await page.evaluate(FETCH, other) == {
                    "directive": "connect-src",
                    "blocked": other,
                }
            finally:
                await browser.close()
    assert elsewhere_asked == []  # refused before any request left the browser
    assert tiles_asked == ["/1/0/1.png"]


async def test_chromium_ignores_an_ipv6_source_so_such_a_tile_server_is_refused(
    chromium: str, tmp_path: Path
) -> None:
    """A page under `img-src 'self' http://[::1]:9` cannot load an image from
    http://[::1]:9: Chromium drops the source as invalid and refuses the image. The same
    policy naming an IPv4 address lets it load. (The page and the image are served by
    Playwright's routing: no server is needed to see what the policy lets through.)"""
    from playwright.async_api import async_playwright

    from tests.integration.test_cli import run

    png = _png()

    async def probe(page: Any, source: str, image: str) -> dict[str, Any]:
        async def document(route: Any) -> None:
            await route.fulfill(
                body="<!doctype html><title>probe</title>",
                content_type="text/html",
                headers={"Content-Security-Policy": f"img-src 'self' {source}"},
            )

        async def tile(route: Any) -> None:
            await route.fulfill(body=png, content_type="image/png")

        await page.route("http://probe.test/", document)
        await page.route(re.compile(r".*/1/0/1\.png$"), tile)
        await page.goto("http://probe.test/")
        found: dict[str, Any] = await page.evaluate(
            """(url) => {
              const violation = new Promise((resolve) => document.addEventListener(
                "securitypolicyviolation", (e) => resolve(e.effectiveDirective), { once: true }));
              const img = new Image();
              img.src = url;
              // The route serves a tile to any request: not loading means refused.
              return img.decode().then(
                () => ({ loaded: img.naturalWidth }),
                () => violation.then((directive) => ({ refused: directive })));
            }""",
            image,
        )
        await page.unroute_all()
        return found

    async with async_playwright() as pw:
        browser = await _browser(pw, chromium)
        try:
            page = await browser.new_page()
            warnings: list[str] = []
            page.on("console", lambda message: warnings.append(message.text))
            ipv6 = await probe(page, "http://[::1]:9", "http://[::1]:9/1/0/1.png")
            ipv4 = await probe(page, "http://127.0.0.1:9", "http://127.0.0.1:9/1/0/1.png")
        finally:
            await browser.close()
    assert ipv6 == {"refused": "img-src"}
    assert any("invalid source: 'http://[::1]:9'" in w for w in warnings), warnings
    assert ipv4 == {"loaded": 256}

    users = tmp_path / "users.yaml"
    add_user(users, "alice", Role.DISPATCHER, "alice-pass")
    template = "http://[::1]:8080/{z}/{x}/{y}.png"
    result = run(
        "dispatch", "--users", str(users), "--port", "0", "--map-tiles", template,
        "--log-format", "console",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: --map-tiles {template!r}: an IPv6 address cannot be named in the page's "
        "Content-Security-Policy (browsers ignore it, and no tile would load): give the tile "
        "server a host name (DNS or /etc/hosts)"
    )
