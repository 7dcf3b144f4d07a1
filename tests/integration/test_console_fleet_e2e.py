"""100,000 fake camera ids against the dispatch console (issue 15, item 11): the registry
stays bounded, /api/state stays small, and Chromium draws the page at once and pages
through the cameras. The presences go through the console's own MQTT message handler
(the function its link calls for every message), as a broker would deliver them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import urllib.request
from pathlib import Path

from bridge.mqtt.client import Inbound
from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.dispatch.console.state import CAMERA_PAGE, CameraLimits
from mesh.protocol.codec import encode
from mesh.protocol.models import CameraPresence, CameraRole, Position
from tests.conftest import CHROMIUM_ARGS
from tests.harness import CENTER
from tests.integration.test_console_csrf_e2e import console
from tests.integration.test_console_e2e import _auth

FAKES = 100_000


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _presence(camera_id: str, unit_id: str, *, lat: float, lon: float) -> bytes:
    now = time.time_ns()
    return encode(
        CameraPresence(
            camera_id=camera_id,
            unit_id=unit_id,
            role=CameraRole.BODY,
            online=True,
            recording=False,
            position=Position(lat=lat, lon=lon, fix_at_ns=now),
            last_seen_ns=now,
        )
    )


def _state_bytes(url: str) -> bytes:
    request = urllib.request.Request(url, headers=_auth("bob"))
    with urllib.request.urlopen(request, timeout=30) as response:
        body: bytes = response.read()
        return body


async def test_a_hundred_thousand_fake_cameras_stay_bounded_and_the_page_draws(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, chromium: str
) -> None:
    from playwright.async_api import async_playwright, expect

    async with console(mosquitto.url, topics, tmp_path) as server:
        base = f"http://127.0.0.1:{server.port}"
        hub = server.hub
        limit = CameraLimits().max_cameras
        rss_before = _rss_mb()
        for i in range(FAKES):
            camera_id = f"fake-{i:06d}"
            hub._on_message(
                Inbound(
                    topics.presence(camera_id),
                    _presence(camera_id, f"fake-unit-{i:06d}", lat=(i % 170) - 85, lon=0.5),
                    retain=True,
                )
            )
            if i % 5000 == 0:
                await asyncio.sleep(0)  # as the link would: let the HTTP side run
        # A genuine camera announcing itself after the flood is shown.
        hub._on_message(
            Inbound(
                topics.presence("bwc-real"),
                _presence("bwc-real", "car-12", lat=CENTER.lat, lon=CENTER.lon),
                retain=False,
            )
        )
        # A presence naming another camera than its topic is refused, not filed under it.
        hub._on_message(
            Inbound(
                topics.presence("fake-x"),
                _presence("bwc-other", "car-12", lat=CENTER.lat, lon=CENTER.lon),
                retain=False,
            )
        )
        assert hub.counters["rejected.presence.wrong_camera"] == 1
        rss_after = _rss_mb()
        assert len(hub.state.cameras) == limit
        assert "bwc-real" in hub.state.cameras
        assert "fake-x" not in hub.state.cameras
        assert hub.status()["cameras.evicted"] == FAKES + 1 - limit
        body = await asyncio.to_thread(_state_bytes, base + "/api/state")
        state = json.loads(body)
        assert (state["cameras_total"], len(state["cameras"])) == (limit, CAMERA_PAGE)
        assert len(body) < 512 * 1024
        one_unit = json.loads(
            await asyncio.to_thread(_state_bytes, base + "/api/state?unit=car-12")
        )
        assert [c["camera_id"] for c in one_unit["cameras"]] == ["bwc-real"]
        print(
            f"{FAKES} fake cameras: {len(hub.state.cameras)} kept, /api/state {len(body)} "
            f"bytes, test process RSS {rss_before:.0f} -> {rss_after:.0f} MB"
        )

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))
            try:
                context = await browser.new_context(
                    http_credentials={"username": "bob", "password": "bob-pass"}
                )
                page = await context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                started = time.monotonic()
                await page.goto(base + "/")
                await page.wait_for_selector("#conn.up", timeout=10_000)
                # Locator waits, not wait_for_function: a string predicate is evaluated with
                # eval in the page, which its Content-Security-Policy refuses.
                await expect(page.locator("#cameras tbody tr")).to_have_count(
                    CAMERA_PAGE, timeout=10_000
                )
                drawn_s = time.monotonic() - started
                assert await page.text_content("#cameras-range") == f"1–{CAMERA_PAGE} of {limit}"
                first = await page.get_attribute("#cameras tbody tr", "data-camera-id")
                await page.click("#cameras-next")
                await expect(page.locator("#cameras-range")).to_have_text(
                    re.compile("^201–"), timeout=10_000
                )
                second = await page.get_attribute("#cameras tbody tr", "data-camera-id")
                assert first != second
                assert await page.locator("#cameras tbody tr").count() == CAMERA_PAGE
                # More presences while the page is open: it stays live and bounded.
                for i in range(2000):
                    camera_id = f"late-{i:05d}"
                    hub._on_message(
                        Inbound(
                            topics.presence(camera_id),
                            _presence(camera_id, "zz-late", lat=1, lon=1),
                            retain=False,
                        )
                    )
                await page.select_option("#filter-unit", "car-12")
                await page.wait_for_selector('#cameras tr[data-camera-id="bwc-real"]')
                assert await page.locator("#cameras tbody tr").count() == 1
                assert errors == []
                print(f"page drawn with {CAMERA_PAGE} of {limit} cameras in {drawn_s:.2f} s")
            finally:
                with contextlib.suppress(Exception):
                    await browser.close()
