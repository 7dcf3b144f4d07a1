"""The console's web app (Starlette): the page, its live feed, and the dispatcher's forms.

    GET  /               the page (static/index.html)
    GET  /static/…       its script and style, served from here (no CDN: closed networks)
    GET  /api/state      everything the page shows, as JSON
    GET  /events         server-sent events: a snapshot, then every change
    POST /api/activate   {unit_id, lat?, lon?, note?}  (dispatchers) → the gateway's receipt
    POST /api/cancel     {unit_id, activation_id, reason?}  (dispatchers)
    GET  /healthz        no login: is the MQTT link up

Every route but /healthz and /static needs a user of the users file (HTTP Basic).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mesh.console.auth import User, Users
from mesh.console.hub import ConsoleHub
from mesh.console.observe import observe_routes
from mesh.console.state import receipt_view
from mesh.models import Ident, Latitude, Longitude, Position, TriggerReceipt

STATIC = Path(__file__).resolve().parent / "static"
_KEEPALIVE_S = 15.0
_REALM = 'Basic realm="trigger-mesh dispatch", charset="UTF-8"'


class ActivateForm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit_id: Ident
    lat: Latitude | None = None
    lon: Longitude | None = None
    note: Annotated[str, Field(max_length=256)] = ""


class CancelForm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit_id: Ident
    activation_id: Ident
    reason: Annotated[str, Field(max_length=512)] = ""


def create_app(hub: ConsoleHub, users: Users) -> Starlette:
    log = structlog.get_logger("mesh.console")

    def login(request: Request, *, dispatcher: bool = False) -> User:
        user = users.authenticate(request.headers.get("authorization"))
        if user is None:
            raise HTTPException(401, "log in", headers={"WWW-Authenticate": _REALM})
        if dispatcher and not user.may_dispatch:
            raise HTTPException(403, f"{user.name} is a {user.role.value}, not a dispatcher")
        return user

    async def page(request: Request) -> Response:
        login(request)
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def state(request: Request) -> Response:
        user = login(request)
        return JSONResponse({**hub.state.snapshot(), "user": user.name, "role": user.role.value})

    async def events(request: Request) -> Response:
        user = login(request)
        queue = hub.attach()

        async def stream() -> AsyncIterator[str]:
            try:
                hello = {"type": "hello", "user": user.name, "role": user.role.value}
                yield f"retry: 2000\ndata: {json.dumps(hello)}\n\n"
                while True:
                    try:
                        update = await asyncio.wait_for(queue.get(), _KEEPALIVE_S)
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
        user = login(request, dispatcher=True)
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
        user = login(request, dispatcher=True)
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
            *observe_routes(hub),  # /metrics and /health, without login (see observe.py)
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
    )


F = TypeVar("F", bound=BaseModel)


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
