"""The console's web app (Starlette): the page, its live feed, and the dispatcher's forms.

    GET  /               the page (static/index.html)
    GET  /static/…       its script and style, served from here (no CDN: closed networks)
    GET  /api/state      everything the page shows, as JSON, with one page of the cameras
                         (?camera_offset=0&camera_limit=200&unit=) and the user's csrf_token
    GET  /events         server-sent events: a snapshot, then every change
    POST /api/activate   {unit_id, lat?, lon?, note?}  (dispatchers) → the gateway's receipt
    POST /api/cancel     {unit_id, activation_id, reason?}  (dispatchers)
    GET  /healthz        no login: is the MQTT link up
    GET  /openapi.json   no login: this API as OpenAPI 3.1 (openapi.py)

Every route but /healthz and /static needs a user of the users file (HTTP Basic). A POST
must also be ``application/json``, same-origin, and carry the user's ``X-CSRF-Token``
(csrf.py says why each).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mesh.dispatch.console.auth import LoginRefused, User, Users
from mesh.dispatch.console.csrf import (
    TOKEN_HEADER,
    Refusal,
    csrf_token,
    origin_refusal,
    token_refusal,
)
from mesh.dispatch.console.forms import ActivateForm, CancelForm
from mesh.dispatch.console.hub import ConsoleHub
from mesh.dispatch.console.observe import observe_routes
from mesh.dispatch.console.openapi import openapi_document
from mesh.dispatch.console.state import CAMERA_PAGE, receipt_view
from mesh.dispatch.console.tiles import tile_origin
from mesh.protocol.models import Position, TriggerReceipt

STATIC = Path(__file__).resolve().parent / "static"
_KEEPALIVE_S = 15.0
_REALM = 'Basic realm="trigger-mesh dispatch", charset="UTF-8"'
_WARN_EVERY_S = 10.0


def page_headers(tiles_origin: str | None) -> dict[str, str]:
    """The page's headers. Its Content-Security-Policy lets it load its scripts, style sheet
    and data from the console alone (no inline script or style, no eval: the page has none),
    images from the console and the agency's own tile server only, when one is configured;
    nothing may frame it (a framed "Start cameras" button could be clicked through a decoy).
    The page tests run under it: they wait with Playwright's locators, not with
    wait_for_function, whose string predicate is eval'd in the page and refused."""
    images = "'self' data:" + ("" if tiles_origin is None else f" {tiles_origin}")
    policy = "; ".join(
        (
            "default-src 'self'",
            "connect-src 'self'",
            f"img-src {images}",
            "script-src 'self'",
            "style-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )
    # No HSTS under TLS: it would bind every port of the host name to HTTPS, not only ours.
    return {
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
    }


class _Access:
    """Who is asking, and whether a state-changing request is really from the page."""

    def __init__(
        self,
        hub: ConsoleHub,
        users: Users,
        allowed_origins: Collection[str],
        map_settings: dict[str, str | None],
    ) -> None:
        self.hub = hub
        self.map_settings = map_settings
        self.users = users
        self.allowed_origins = allowed_origins
        # The CSRF tokens' secret: new at each start (a page reconnecting gets the new token).
        self.csrf_secret = os.urandom(32)
        self.log = structlog.get_logger("mesh.console")
        # Refusals are counted each, logged at most once per _WARN_EVERY_S (no login needed
        # to be refused: the log must not grow at a client's pace).
        self._warned_at = -_WARN_EVERY_S
        self._unlogged = 0

    async def login(self, request: Request, *, dispatcher: bool = False) -> User:
        client = "" if request.client is None else request.client.host
        try:
            user = await self.users.authenticate(request.headers.get("authorization"), client)
        except LoginRefused as exc:
            self.hub.counters[f"logins.refused.{exc.status}"] += 1
            raise HTTPException(
                exc.status, exc.detail, headers={"Retry-After": str(exc.retry_after_s)}
            ) from None
        if user is None:
            self.hub.counters["logins.failed"] += 1
            raise HTTPException(401, "log in", headers={"WWW-Authenticate": _REALM})
        if dispatcher and not user.may_dispatch:
            raise HTTPException(403, f"{user.name} is a {user.role.value}, not a dispatcher")
        return user

    async def order(self, request: Request) -> User:
        """The dispatcher of a state-changing request, once it is shown not forged."""
        refusal = _origin_refusal(request, self.allowed_origins)
        if refusal is None:
            user = await self.login(request, dispatcher=True)
            given = request.headers.get(TOKEN_HEADER)
            refusal = token_refusal(given, csrf_token(self.csrf_secret, user.name))
            if refusal is None:
                return user
        self.hub.counters["forgery.refused"] += 1
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self.log.warning(
                "possible forgery refused",
                path=request.url.path,
                reason=refusal.detail,
                refused_since_last_warning=self._unlogged,
            )
            self._warned_at, self._unlogged = now, 0
        else:
            self._unlogged += 1
        raise HTTPException(refusal.status, refusal.detail)

    def whoami(self, user: User) -> dict[str, Any]:
        token = csrf_token(self.csrf_secret, user.name)
        return {
            "user": user.name,
            "role": user.role.value,
            "csrf_token": token,
            "map": self.map_settings,
        }


def create_app(
    hub: ConsoleHub,
    users: Users,
    *,
    allowed_origins: Collection[str] = (),
    map_tiles: str | None = None,
    map_attribution: str = "",
) -> Starlette:
    """``map_tiles``: the basemap's tile URL template (tiles.py checks it: ValueError)."""
    log = structlog.get_logger("mesh.console")
    headers = page_headers(None if map_tiles is None else tile_origin(map_tiles))
    map_settings = {"tiles": map_tiles, "attribution": map_attribution[:200]}
    access = _Access(hub, users, allowed_origins, map_settings)
    login, order, whoami = access.login, access.order, access.whoami
    api_document = openapi_document()

    async def page(request: Request) -> Response:
        await login(request)
        return FileResponse(STATIC / "index.html", headers=headers)

    async def openapi(request: Request) -> Response:
        return JSONResponse(api_document)

    async def state(request: Request) -> Response:
        user = await login(request)
        offset = _query_int(request, "camera_offset", 0)
        limit = _query_int(request, "camera_limit", CAMERA_PAGE)
        unit = request.query_params.get("unit", "")
        return JSONResponse({**hub.state.snapshot(offset, limit, unit), **whoami(user)})

    async def events(request: Request) -> Response:
        user = await login(request)
        queue = hub.attach()

        async def stream() -> AsyncIterator[str]:
            try:
                hello = {"type": "hello", **whoami(user)}
                yield f"retry: 2000\ndata: {json.dumps(hello)}\n\n"
                while True:
                    try:
                        async with asyncio.timeout(_KEEPALIVE_S):
                            update = await queue.get()
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield f"data: {json.dumps(update, separators=(',', ':'))}\n\n"
            finally:
                hub.detach(queue)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def activate(request: Request) -> Response:
        user = await order(request)
        form = await _form(request, ActivateForm)
        position = None
        if form.lat is not None and form.lon is not None:
            position = Position(lat=form.lat, lon=form.lon, fix_at_ns=time.time_ns())
        elif (form.lat is None) != (form.lon is None):
            raise HTTPException(400, "give both lat and lon, or neither")
        receipt = await hub.activate(user.name, form.unit_id, position=position, note=form.note)
        log.info(
            "remote activation answered",
            user=user.name,
            unit=form.unit_id,
            outcome=None if receipt is None else receipt.outcome.value,
        )
        return _answer(receipt, form.unit_id)

    async def cancel(request: Request) -> Response:
        user = await order(request)
        form = await _form(request, CancelForm)
        receipt = await hub.cancel(user.name, form.unit_id, form.activation_id, form.reason)
        return _answer(receipt, form.unit_id)

    async def healthz(request: Request) -> Response:
        return JSONResponse(hub.status(), status_code=200 if hub.link.is_up else 503)

    async def http_error(request: Request, exc: Exception) -> Response:
        # Errors as JSON, like every other answer: the page shows ``detail`` as it is.
        assert isinstance(exc, HTTPException)
        return JSONResponse(
            {"outcome": "error", "detail": exc.detail},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    return Starlette(
        exception_handlers={HTTPException: http_error},
        routes=[
            Route("/", page),
            Route("/api/state", state),
            Route("/events", events),
            Route("/api/activate", activate, methods=["POST"]),
            Route("/api/cancel", cancel, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/openapi.json", openapi),
            *observe_routes(hub),  # /metrics and /health, without login (see observe.py)
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
    )


F = TypeVar("F", bound=BaseModel)


def _origin_refusal(request: Request, allowed_origins: Collection[str]) -> Refusal | None:
    return origin_refusal(
        content_type=request.headers.get("content-type"),
        origin=request.headers.get("origin"),
        fetch_site=request.headers.get("sec-fetch-site"),
        scheme=request.url.scheme,
        host=request.headers.get("host"),
        allowed_origins=allowed_origins,
    )


def _query_int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 9:
        raise HTTPException(400, f"{name}: a whole number ≥ 0, not {raw[:20]!r}")
    return int(raw)


async def _form(request: Request, model: type[F]) -> F:
    try:
        data: Any = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPException(400, "the body must be a JSON object") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        problem = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise HTTPException(400, f"{field}: {problem}") from None


def _answer(receipt: TriggerReceipt | None, unit_id: str) -> Response:
    if receipt is None:
        return JSONResponse(
            {"outcome": "no_answer", "reason": f"no gateway of unit {unit_id} answered in 5 s"},
            status_code=504,
        )
    return JSONResponse(receipt_view(receipt))
