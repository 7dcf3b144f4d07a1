"""The dispatch console against a live mesh: real mosquitto, gateway, cameras, HTTP, and
Debian's Chromium driven by Playwright."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bridge.mqtt.embedded import MosquittoProcess
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.decide.geo import offset
from mesh.dispatch.console.auth import Role, Users, add_user
from mesh.dispatch.console.server import ConsoleServer
from mesh.protocol.models import (
    CONFIRMED_OUTCOMES,
    ActivationState,
    OutcomeStatus,
    SourceType,
    TriggerKind,
)
from tests.conftest import CHROMIUM_ARGS
from tests.harness import CENTER, UNIT, event, running_mesh, wait_until
from tests.integration.test_escalation_cancel_e2e import FAST, ghost

USERS = {"alice": (Role.DISPATCHER, "alice-pass"), "bob": (Role.VIEWER, "bob-pass")}


@asynccontextmanager
async def running_console(url: BrokerUrl, topics: Topics, tmp_path: Path) -> AsyncIterator[str]:
    """A console on a free port; yields its base URL once its MQTT link is up."""
    path = tmp_path / "users.yaml"
    for name, (role, password) in USERS.items():
        add_user(path, name, role, password)
    server = ConsoleServer(url, topics, Users.load(path), port=0)
    task = asyncio.create_task(server.run())
    try:
        await wait_until(lambda: server.started and server.hub.link.is_up, 15)
        yield f"http://127.0.0.1:{server.port}"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _auth(user: str | None) -> dict[str, str]:
    if user is None:
        return {}
    token = base64.b64encode(f"{user}:{USERS[user][1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def http(
    base: str,
    path: str,
    *,
    user: str | None = "alice",
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One request (in a thread: urllib blocks); returns status, JSON body, headers. A POST
    carries the user's CSRF token, read first from /api/state as a script would."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    sent = {"Content-Type": "application/json", **_auth(user)}
    if data is not None and user is not None:
        status, state, _ = await http(base, "/api/state", user=user)
        assert status == 200, state
        sent["X-CSRF-Token"] = state["csrf_token"]
    request = urllib.request.Request(
        base + path,
        data=data,
        method="GET" if data is None else "POST",
        headers={**sent, **(headers or {})},
    )

    def go() -> tuple[int, dict[str, Any], dict[str, str]]:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read()), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read()), dict(exc.headers)

    return await asyncio.to_thread(go)


async def test_logins_roles_and_bad_requests(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_console(mosquitto.url, topics, tmp_path) as base:
        status, body, headers = await http(base, "/api/state", user=None)
        assert status == 401
        assert headers["www-authenticate"].startswith('Basic realm="trigger-mesh dispatch"')
        status, body, _ = await http(base, "/healthz", user=None)
        assert (status, body["mqtt"]) == (200, True)
        status, body, _ = await http(base, "/api/state", user="bob")
        assert (status, body["role"], body["activations"]) == (200, "viewer", [])
        # A viewer sees, but may not start cameras.
        status, body, _ = await http(base, "/api/activate", user="bob", body={"unit_id": UNIT})
        assert (status, body["detail"]) == (403, "bob is a viewer, not a dispatcher")
        # Bad forms are refused naming the field; nothing is sent.
        for form, detail in [
            (
                {"unit_id": UNIT, "lat": 91, "lon": 0},
                "lat: Input should be less than or equal to 90",
            ),
            ({"unit_id": UNIT, "lat": 39.9}, "give both lat and lon, or neither"),
            ({"unit_id": "car 12"}, "unit_id: String should match pattern"),
            ({"unit_id": UNIT, "radius": 5}, "radius: unknown field"),
            ({}, "unit_id: Field required"),
        ]:
            status, body, _ = await http(base, "/api/activate", body=form)
            assert status == 400, form
            assert body["detail"].startswith(detail), body
        status, body, _ = await http(base, "/api/activate", raw=b"unit_id=car-12")
        assert (status, body["detail"]) == (400, "the body must be a JSON object")
        # No gateway of that unit: the dispatcher is told nobody answered.
        status, body, _ = await http(
            base, "/api/cancel", body={"unit_id": "car-99", "activation_id": "a-1"}
        )
        assert status == 504
        assert body["reason"] == "no gateway of unit car-99 answered in 5 s"


async def read_events(base: str, user: str, into: list[dict[str, Any]]) -> None:
    """Follow /events, appending every message (a raw HTTP/1.1 client: the stream is
    chunked, and each event arrives as one chunk)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    headers = "".join(f"{k}: {v}\r\n" for k, v in _auth(user).items())
    writer.write(f"GET /events HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())
    await writer.drain()
    try:
        while line := await reader.readline():
            if line.startswith(b"data: "):
                into.append(json.loads(line[6:]))
    finally:
        writer.close()


async def test_live_events_and_a_remote_activation_over_http(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with (
        running_mesh(mosquitto.url, topics, tmp_path / "log.db") as mesh,
        running_console(mosquitto.url, topics, tmp_path) as base,
    ):
        seen: list[dict[str, Any]] = []
        follower = asyncio.create_task(read_events(base, "bob", seen))
        try:
            await wait_until(lambda: any(m["type"] == "snapshot" for m in seen))
            hello = seen[0]
            assert {k: hello[k] for k in ("type", "user", "role")} == {
                "type": "hello",
                "user": "bob",
                "role": "viewer",
            }
            assert len(hello["csrf_token"]) == 64
            # The retained presence of every camera reaches the console.
            await wait_until(
                lambda: (
                    {m["camera"]["camera_id"] for m in seen if m["type"] == "camera"}
                    | {
                        c["camera_id"]
                        for m in seen
                        if m["type"] == "snapshot"
                        for c in m["cameras"]
                    }
                    >= set(mesh.agents)
                )
            )
            # A dispatcher orders recording where bwc-far is (2 km north of the car).
            lat, lon = offset(CENTER.lat, CENTER.lon, 2000, 0)
            status, receipt, _ = await http(
                base,
                "/api/activate",
                body={"unit_id": UNIT, "lat": lat, "lon": lon, "note": "shots"},
            )
            assert (status, receipt["outcome"]) == (200, "accepted"), receipt
            record = await mesh.watcher.final_record(receipt["activation_id"], 10)
            assert record is not None
            assert record.trigger.kind is TriggerKind.DISPATCH
            assert (record.trigger.source.type, record.trigger.source.id) == (
                SourceType.DISPATCH,
                "alice",
            )
            started = {c.camera_id for c in record.cameras if c.status is OutcomeStatus.STARTED}
            # bwc-far is in range of the ordered position; bwc-7a (by the car) is not; the
            # unit's own cameras are included by policy.
            assert started == {"bwc-far", "dash-12", "bwc-12a"}
            await wait_until(
                lambda: any(
                    m["type"] == "activation"
                    and m["activation"]["activation_id"] == record.activation_id
                    and m["activation"]["state"] == "confirmed"
                    for m in seen
                )
            )
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)


async def test_the_page_in_chromium(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, chromium: str
) -> None:
    from playwright.async_api import async_playwright

    async with (
        running_mesh(mosquitto.url, topics, tmp_path / "log.db", policy=FAST) as mesh,
        running_console(mosquitto.url, topics, tmp_path) as base,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))
        try:
            context = await browser.new_context(
                http_credentials={"username": "alice", "password": "alice-pass"},
                viewport={"width": 1400, "height": 1000},
            )
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(base + "/")
            await page.wait_for_selector("#conn.up", timeout=10_000)
            await page.wait_for_selector('tr[data-camera-id="bwc-far"]', timeout=10_000)
            # A camera that stopped answering, in range of what comes next.
            await ghost(mesh, "bwc-silent", 50, online=True, offline_s=0)
            await page.wait_for_selector('tr[data-camera-id="bwc-silent"]', timeout=5_000)

            # 1. A trigger shows on the page within 1 s of being sent.
            trigger = event(TriggerKind.WEAPON_DRAW, source_id="holster-9")
            sent = time.monotonic()
            await mesh.send(trigger)
            await page.wait_for_selector("#feed tbody tr[data-activation-id]", timeout=1_000)
            shown_after_ms = (time.monotonic() - sent) * 1000
            row = page.locator("#feed tbody tr").first
            assert await row.locator("td").nth(1).text_content() == "weapon_draw"
            assert await row.locator("td").nth(2).text_content() == UNIT

            # 2. The camera that did not start is highlighted, in the feed, the camera
            # table, the escalations and the plot.
            receipt = await mesh.receipt(trigger)
            record = await mesh.watcher.final_record(str(receipt.activation_id), 10)
            assert record is not None
            assert record.state is ActivationState.PARTIAL
            feed_row = page.locator(f'tr[data-activation-id="{record.activation_id}"]')
            await feed_row.and_(page.locator("tr.has-missed")).wait_for(timeout=5_000)
            assert "bwc-silent" in (await feed_row.locator("td.missed-list").text_content() or "")
            await page.wait_for_selector(
                '#cameras tr.missed[data-camera-id="bwc-silent"]', timeout=5_000
            )
            assert await page.locator("#cameras tr.missed").count() == 1
            await page.wait_for_selector(
                '#escalations li[data-camera-id="bwc-silent"]', timeout=5_000
            )
            assert await page.locator("#plot circle.cam-missed").count() == 1

            # 3. Remote activation from the page starts the cameras in range of the position.
            lat, lon = offset(CENTER.lat, CENTER.lon, 2000, 0)
            await page.select_option("#activate-unit", UNIT)
            await page.fill("#activate-lat", f"{lat:.6f}")
            await page.fill("#activate-lon", f"{lon:.6f}")
            await page.fill("#activate-note", "from the browser test")
            await page.click("#activate-submit")
            await page.wait_for_selector("#activate-result.ok", timeout=10_000)
            result = await page.text_content("#activate-result") or ""
            activation_id = result.removeprefix("accepted: ")
            ordered = await mesh.watcher.final_record(activation_id, 10)
            assert ordered is not None
            assert (ordered.trigger.kind, ordered.trigger.source.id) == (
                TriggerKind.DISPATCH,
                "alice",
            )
            # The unit's cameras were already recording since the weapon draw; bwc-far starts.
            recording = {c.camera_id for c in ordered.cameras if c.status in CONFIRMED_OUTCOMES}
            assert recording == {"bwc-far", "dash-12", "bwc-12a"}
            assert next(c for c in ordered.cameras if c.camera_id == "bwc-far").status is (
                OutcomeStatus.STARTED
            )
            assert "bwc-7a" not in {c.camera_id for c in ordered.cameras if c.expected}
            assert mesh.agents["bwc-far"].recorder.is_recording(time.time_ns())
            await page.wait_for_selector(
                f'tr[data-activation-id="{activation_id}"].state-confirmed', timeout=5_000
            )
            shot = tmp_path / "console.png"
            await page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            assert errors == []
            print(f"trigger shown after {shown_after_ms:.0f} ms; screenshot {shot}")
        finally:
            with contextlib.suppress(Exception):
                await browser.close()


async def test_a_remote_activation_is_sent_again_until_the_gateway_answers(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """The first copy goes out while no gateway listens (as after a broker restart); the
    console sends it again and gets the receipt once the gateway is up."""
    from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
    from mesh.dispatch.console.hub import ConsoleHub
    from mesh.protocol.models import ReceiptOutcome
    from tests.harness import make_gateway

    hub = ConsoleHub(mosquitto.url, topics)
    copies: list[Inbound] = []
    spy = MqttLink(
        mosquitto.url,
        LinkOptions(
            "resend-spy", subscriptions=((topics.trigger(UNIT), 1),), persistent_session=False
        ),
    )
    tasks = [asyncio.create_task(hub.run()), asyncio.create_task(spy.run(copies.append))]
    try:
        await hub.link.wait_up(10)
        await spy.wait_up(10)
        asking = asyncio.create_task(hub.activate("alice", UNIT, timeout_s=15))
        await wait_until(lambda: len(copies) == 1)  # out, and no gateway heard it
        gateway = make_gateway(mosquitto.url, topics, tmp_path / "log.db")
        tasks.append(asyncio.create_task(gateway.run()))
        receipt = await asking
        assert receipt is not None
        assert receipt.outcome is ReceiptOutcome.ACCEPTED
        assert len(copies) >= 2
        assert len({json.loads(c.payload)["event_id"] for c in copies}) == 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
