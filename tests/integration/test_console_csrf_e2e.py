"""Cross-site request forgery against the dispatch console, performed in Debian's Chromium
(issue 15, item 6): a page on another origin, visited by a logged-in dispatcher, posts a
``text/plain`` form whose body is JSON, and ``fetch(…, {mode: "no-cors"})``, to
/api/activate and /api/cancel. Nothing may reach the broker; the console's own page still
works."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.decide.geo import offset
from mesh.decide.policy import Policy
from mesh.dispatch.console.auth import Users, add_user
from mesh.dispatch.console.server import ConsoleServer
from mesh.protocol.models import TriggerKind
from tests.conftest import CHROMIUM_ARGS
from tests.harness import CENTER, UNIT, event, running_mesh, wait_until
from tests.integration.test_console_e2e import USERS, _auth, http

# A weapon draw stays cancellable for the whole test, however slow the machine.
POLICY = Policy.model_validate({"kinds": {"weapon_draw": {"cancel_window_s": 300}}})


@asynccontextmanager
async def console(url: BrokerUrl, topics: Topics, tmp_path: Path) -> AsyncIterator[ConsoleServer]:
    path = tmp_path / "users.yaml"
    for name, (role, password) in USERS.items():
        add_user(path, name, role, password)
    server = ConsoleServer(url, topics, Users.load(path), port=0)
    task = asyncio.create_task(server.run())
    try:
        await wait_until(lambda: server.started and server.hub.link.is_up, 15)
        yield server
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@contextlib.contextmanager
def attacker_site(pages: dict[str, str]) -> Iterator[str]:
    """Another origin (another loopback port) serving the attacker's pages."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "not here").encode()
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _forms(base: str, activation_id: str, lat: float, lon: float) -> dict[str, str]:
    """The attack as found: a text/plain form's body is ``name=value``, so a name ending in
    an open string and a value closing it give valid JSON; and no-cors fetches before it."""
    activate = {"unit_id": UNIT, "lat": lat, "lon": lon, "note": "attacker"}
    cancel = {"unit_id": UNIT, "activation_id": activation_id, "reason": "attacker"}

    def form(path: str, body: dict[str, Any], then: str) -> str:
        name = json.dumps(body)[:-2]  # ... "note": "attacker   (the '=' lands in the string)
        fetches = ", ".join(
            f"fetch({json.dumps(base + p)}, {{method: 'POST', mode: 'no-cors', "
            f"credentials: 'include', headers: {{'Content-Type': {json.dumps(ct)}}}, "
            f"body: {json.dumps(json.dumps({**b, 'note' if 'note' in b else 'reason': then}))}}})"
            for p, b in (("/api/activate", activate), ("/api/cancel", cancel))
            for ct in ("text/plain", "application/json")
        )
        return f"""<!doctype html><html><body>
<form id="f" method="POST" enctype="text/plain" action="{base}{path}">
<input type="hidden" name='{name}' value='"}}'></form>
<script>
Promise.allSettled([{fetches}]).then(() => {{
  document.title = "fetched";
  document.getElementById("f").submit();
}});
</script></body></html>"""

    return {
        "/activate.html": form("/api/activate", activate, "attacker-fetch"),
        "/cancel.html": form("/api/cancel", cancel, "attacker-fetch"),
    }


def _said(message: Inbound) -> str:
    """What a dispatcher's trigger's note or a cancel's reason says."""
    body = json.loads(message.payload)
    return str(body["detail"]["note"] if "detail" in body else body["reason"])


async def test_a_cross_site_page_cannot_activate_or_cancel_through_the_browser(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, chromium: str
) -> None:
    from playwright.async_api import async_playwright, expect

    triggers: list[Inbound] = []
    cancels: list[Inbound] = []
    spy = MqttLink(
        mosquitto.url,
        LinkOptions(
            "csrf-spy",
            subscriptions=((topics.trigger(UNIT), 1), (topics.cancel(UNIT), 1)),
            persistent_session=False,
        ),
    )

    def heard(message: Inbound) -> None:
        if message.topic == topics.cancel(UNIT):
            cancels.append(message)
        elif json.loads(message.payload)["source"]["type"] == "dispatch":
            triggers.append(message)

    spying = asyncio.create_task(spy.run(heard))
    async with (
        running_mesh(mosquitto.url, topics, tmp_path / "log.db", policy=POLICY) as mesh,
        console(mosquitto.url, topics, tmp_path) as server,
        async_playwright() as pw,
    ):
        await spy.wait_up(10)
        base = f"http://127.0.0.1:{server.port}"
        browser = await pw.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))
        try:
            context = await browser.new_context(
                http_credentials={"username": "alice", "password": "alice-pass"}
            )
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # The dispatcher is logged in, watching; an officer draws a weapon.
            await page.goto(base + "/")
            await page.wait_for_selector("#conn.up", timeout=10_000)
            await page.wait_for_selector('tr[data-camera-id="bwc-far"]', timeout=10_000)
            drawn = event(TriggerKind.WEAPON_DRAW, source_id="holster-9")
            await mesh.send(drawn)
            activation_id = str((await mesh.receipt(drawn)).activation_id)
            await page.wait_for_selector(
                f'tr[data-activation-id="{activation_id}"] button.cancel', timeout=10_000
            )

            # The attack: in another tab of the same browser, the attacker's pages.
            lat, lon = offset(CENTER.lat, CENTER.lon, 2000, 0)
            answers: dict[str, int] = {}
            with attacker_site(_forms(base, activation_id, lat, lon)) as evil:
                evil_tab = await context.new_page()
                evil_tab.on(
                    "response",
                    lambda r: (
                        answers.__setitem__(r.url, r.status) if r.url.startswith(base) else None
                    ),
                )
                for name in ("activate", "cancel"):
                    await evil_tab.goto(f"{evil}/{name}.html")
                    # The form is submitted once the fetches settled (the console answered).
                    await evil_tab.wait_for_url(f"{base}/api/{name}", timeout=15_000)
                    await evil_tab.wait_for_load_state()
            print(f"the console answered the attacker's forms: {answers}")
            assert answers == {f"{base}/api/activate": 415, f"{base}/api/cancel": 415}

            # Barriers: the console's own page cancels, then activates again. The spy hears
            # each after anything the attack had made the console send before.
            page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept("legit")))
            await page.click(f'tr[data-activation-id="{activation_id}"] button.cancel')
            # Not wait_for_function: its string predicate is evaluated with eval in the
            # page, which the page's Content-Security-Policy refuses.
            await expect(page.locator("#activate-result")).to_have_text(
                re.compile("^cancel "), timeout=10_000
            )
            assert (await page.text_content("#activate-result") or "").startswith("cancel accepted")
            await page.select_option("#activate-unit", UNIT)
            await page.fill("#activate-note", "barrier")
            await page.click("#activate-submit")
            await wait_until(lambda: any(_said(m) == "barrier" for m in triggers), 10)
            await wait_until(lambda: any(_said(m) == "legit" for m in cancels), 10)
            await wait_until(
                lambda: server.hub.state.activations[activation_id].cancelled_by is not None
            )

            # Nothing the attacker's page sent reached the broker; the console kept only
            # the dispatcher's own orders.
            assert {_said(m) for m in triggers} == {"barrier"}
            assert {_said(m) for m in cancels} == {"legit"}
            assert server.hub.counters["forgery.refused"] >= 6
            record = server.hub.state.activations[activation_id]
            assert record.cancelled_by == "dispatch:alice"
            assert errors == []
        finally:
            with contextlib.suppress(Exception):
                await browser.close()
    spying.cancel()
    await asyncio.gather(spying, return_exceptions=True)


async def test_state_changing_requests_outside_the_page_are_refused(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """Each check on its own, as a client that can set any header would meet it; a script
    without Origin that read its token is served."""
    async with console(mosquitto.url, topics, tmp_path) as server:
        base = f"http://127.0.0.1:{server.port}"
        own = f"http://127.0.0.1:{server.port}"
        form = {"unit_id": "car-99", "activation_id": "a-1"}
        for headers, status, detail in [
            ({"Content-Type": "text/plain"}, 415, "the body must be sent as Content-Type"),
            (
                {"Content-Type": "application/x-www-form-urlencoded"},
                415,
                "the body must be sent as Content-Type",
            ),
            ({"Origin": "http://127.0.0.1:1"}, 403, "cross-origin request refused"),
            ({"Origin": "null"}, 403, "cross-origin request refused"),
            ({"Sec-Fetch-Site": "same-site"}, 403, "cross-site request refused"),
            ({"Sec-Fetch-Site": "cross-site", "Origin": own}, 403, "cross-site request"),
            ({"X-CSRF-Token": "0" * 64}, 403, "wrong X-CSRF-Token"),
        ]:
            status_got, body, _ = await http(base, "/api/cancel", body=form, headers=headers)
            assert (status_got, body["detail"][: len(detail)]) == (status, detail), headers
        # No token at all (a request made without reading /api/state first).
        raw = json.dumps(form).encode()
        answer = await asyncio.to_thread(_post_without_token, base + "/api/cancel", raw)
        assert answer[0] == 403
        assert answer[1]["detail"].startswith("missing X-CSRF-Token")
        # The page's own origin, and a script with no Origin at all, get through (no
        # gateway of car-99: nobody answers).
        status, body, _ = await http(
            base, "/api/cancel", body=form, headers={"Origin": own, "Sec-Fetch-Site": "same-origin"}
        )
        assert status == 504
        status, body, _ = await http(base, "/api/cancel", body=form)
        assert status == 504
        # The page may not be framed by another site.
        page = await asyncio.to_thread(_get_headers, base + "/")
        assert page["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page["content-security-policy"]


def _post_without_token(url: str, data: bytes) -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", **_auth("alice")},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _get_headers(url: str) -> dict[str, str]:
    import urllib.request

    request = urllib.request.Request(url, headers=_auth("alice"))
    with urllib.request.urlopen(request, timeout=10) as response:
        return {k.lower(): v for k, v in response.headers.items()}
