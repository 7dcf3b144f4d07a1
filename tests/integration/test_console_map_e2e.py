"""The console's map in Chromium (issue 18 item 10): a layout that holds from 400 px to
wide screens, labels beside the markers, and basemap tiles fetched only from the tile
server the console is given (a loopback one here), and from nowhere without one.

Screenshots are saved in the test's tmp directory (console-<width>.png)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bridge.mqtt.embedded import MosquittoProcess
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.dispatch.console.auth import Role, Users, add_user
from mesh.dispatch.console.server import ConsoleServer
from mesh.protocol.models import TriggerKind
from tests.conftest import CHROMIUM_ARGS
from tests.harness import UNIT, event, running_mesh, wait_until
from tests.integration.test_escalation_cancel_e2e import FAST

WIDTHS = (400, 768, 1280, 1920)


def _png(size: int = 256) -> bytes:
    """A light tile with a darker edge, so the grid of tiles shows in the screenshots."""
    rows = []
    for y in range(size):
        row = bytearray([0])  # filter: none
        for x in range(size):
            edge = x in (0, size - 1) or y in (0, size - 1)
            row += bytes((200, 206, 190) if edge else (236, 239, 228))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


@contextlib.contextmanager
def tile_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback tile server: any /z/x/y.png is the same small PNG; yields its URL
    template and the paths asked for."""
    tile = _png()
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(tile)))
            self.end_headers()
            self.wfile.write(tile)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/{{z}}/{{x}}/{{y}}.png", asked
    finally:
        server.shutdown()
        server.server_close()


@asynccontextmanager
async def console_with(
    url: BrokerUrl, topics: Topics, tmp_path: Path, tiles: str | None
) -> AsyncIterator[str]:
    users = tmp_path / "users.yaml"
    add_user(users, "alice", Role.DISPATCHER, "alice-pass")
    server = ConsoleServer(
        url, topics, Users.load(users), port=0, map_tiles=tiles, map_attribution="test tiles"
    )
    task = asyncio.create_task(server.run())
    try:
        await wait_until(lambda: server.started and server.hub.link.is_up, 15)
        yield f"http://127.0.0.1:{server.port}"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


Box = dict[str, float]


def _overlap(a: Box, b: Box) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


_BOXES = """(selector) => [...document.querySelectorAll(selector)].map((e) => {
  const r = e.getBoundingClientRect();
  return { x: r.x, y: r.y, width: r.width, height: r.height, text: e.textContent };
})"""


async def _check_page(page: Any, width: int, shot: Path) -> dict[str, Any]:
    """Layout and labels at one width; returns what the labels say."""
    await page.set_viewport_size({"width": width, "height": 900})
    await page.wait_for_selector("#feed tbody tr[data-activation-id]", timeout=10_000)
    await page.wait_for_selector("#plot-labels text.unit", timeout=10_000)
    await page.screenshot(path=str(shot), full_page=True)
    # Nothing wider than the window: no sideways scrolling of the page.
    scroll_width, inner_width = await page.evaluate(
        "[document.scrollingElement.scrollWidth, window.innerWidth]"
    )
    assert scroll_width <= inner_width, (width, scroll_width, inner_width)
    # The map and the activations table (its scrolling box) do not overlap.
    (plot,) = await page.evaluate(_BOXES, "#plot")
    (table,) = await page.evaluate(_BOXES, "#feed-panel .table-scroll")
    assert not _overlap(plot, table), (width, plot, table)
    assert plot["width"] <= inner_width
    # Labels: none covers a marker or another label.
    labels = await page.evaluate(_BOXES, "#plot-labels text")
    markers = await page.evaluate(_BOXES, "#plot-cameras circle, #plot-activations .act-origin")
    for i, label in enumerate(labels):
        for marker in markers:
            assert not _overlap(label, marker), (width, label, marker)
        for other in labels[i + 1 :]:
            assert not _overlap(label, other), (width, label, other)
    return {"labels": [label["text"] for label in labels]}


async def test_the_map_layout_labels_and_tiles_at_four_widths(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, chromium: str
) -> None:
    from playwright.async_api import async_playwright

    with tile_server() as (template, asked):
        tile_origin = "{0.scheme}://{0.netloc}".format(urlsplit(template))
        async with (
            running_mesh(mosquitto.url, topics, tmp_path / "log.db", policy=FAST) as mesh,
            console_with(mosquitto.url, topics, tmp_path, template) as base,
            async_playwright() as pw,
        ):
            await mesh.send(event(TriggerKind.WEAPON_DRAW, source_id="holster-9"))
            browser = await pw.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))
            try:
                context = await browser.new_context(
                    http_credentials={"username": "alice", "password": "alice-pass"}
                )
                page = await context.new_page()
                requested: list[str] = []
                page.on("request", lambda request: requested.append(request.url))
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                response = await page.goto(base + "/")
                assert response is not None
                policy = await response.header_value("content-security-policy") or ""
                assert f"img-src 'self' data: {tile_origin};" in policy
                await page.wait_for_selector("#conn.up", timeout=10_000)
                for width in WIDTHS:
                    found = await _check_page(page, width, tmp_path / f"console-{width}.png")
                    # The unit at the activation's origin and the cameras apart from the
                    # car are named; those a few metres from the car may give way.
                    assert {UNIT, "bwc-7a", "bwc-far"} <= set(found["labels"]), found
                # Tiles came from the tile server, and drew under the markers.
                # (A locator, not wait_for_function: the page's CSP refuses eval.)
                await page.locator("#plot-tiles image").first.wait_for(state="attached")
                assert asked, "no tile was requested"
                assert all(path.endswith(".png") and path.count("/") == 3 for path in asked)
                assert await page.text_content("#plot-attribution") == "test tiles"
                hosts = {"{0.scheme}://{0.netloc}".format(urlsplit(u)) for u in requested}
                assert hosts == {base, tile_origin}, hosts
                assert errors == []
            finally:
                await browser.close()
    print(f"screenshots in {tmp_path}")


async def test_without_a_tile_server_nothing_is_fetched_from_elsewhere(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, chromium: str
) -> None:
    from playwright.async_api import async_playwright

    async with (
        running_mesh(mosquitto.url, topics, tmp_path / "log.db", policy=FAST) as mesh,
        console_with(mosquitto.url, topics, tmp_path, None) as base,
        async_playwright() as pw,
    ):
        await mesh.send(event(TriggerKind.WEAPON_DRAW, source_id="holster-9"))
        browser = await pw.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))
        try:
            context = await browser.new_context(
                http_credentials={"username": "alice", "password": "alice-pass"}
            )
            requested: list[str] = []
            # Every request of the page, whoever makes it, goes through here.
            await context.route(
                "**/*", lambda route: (requested.append(route.request.url), route.continue_())[1]
            )
            page = await context.new_page()
            response = await page.goto(base + "/")
            assert response is not None
            policy = await response.header_value("content-security-policy") or ""
            assert "img-src 'self' data:;" in policy
            found = await _check_page(page, 1280, tmp_path / "console-no-tiles.png")
            assert UNIT in found["labels"]
            assert await page.locator("#plot-tiles image").count() == 0
            hosts = {"{0.scheme}://{0.netloc}".format(urlsplit(u)) for u in requested}
            assert hosts == {base}, hosts
        finally:
            await browser.close()


def test_a_bad_tile_template_stops_the_console_at_start(tmp_path: Path) -> None:
    from tests.integration.test_cli import run

    users = tmp_path / "users.yaml"
    add_user(users, "alice", Role.DISPATCHER, "alice-pass")
    result = run(
        "dispatch",
        "--users",
        str(users),
        "--port",
        "0",
        "--map-tiles",
        "https://t.example/{z}",
        "--log-format",
        "console",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --map-tiles 'https://t.example/{z}': missing {x}, {y}"
