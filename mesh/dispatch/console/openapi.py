"""The console's HTTP API as an OpenAPI 3.1 document: served at ``/openapi.json`` and
checked in as docs/console-openapi.json (`trigger-mesh console-openapi`, `make schema`).

Written out here rather than derived from the routes, which carry no types; a test holds
the two together (every route documented, every documented path served).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mesh.dispatch.console.forms import ActivateForm, CancelForm

API_VERSION = "1.0.0"
_JSON = "application/json"

_AUTH = """\
**Login**: HTTP Basic, against the console's users file (`trigger-mesh dispatch-user`);
there are no cookies and no sessions. Serve the console over TLS (`--tls-cert`,
`--tls-key`) or behind a TLS proxy: Basic sends the password with every request. Failed
logins back off per address and per user name (429 with `Retry-After`); at most 2
password checks run at once (503 beyond).

**Roles**: `viewer` may read; `dispatcher` may also POST.

**Forgery checks on every POST** (before the login is checked): the body must be sent as
`Content-Type: application/json` (else 415); a request sending `Sec-Fetch-Site` must say
`same-origin`, and one sending `Origin` must come from the console's own origin or an
`--allowed-origin` (else 403). Then the `X-CSRF-Token` header must hold the user's token,
which `GET /api/state` (field `csrf_token`) and the first event of `/events` give; it
changes when the console restarts (else 403).

Every error answers `{"outcome": "error", "detail": "…"}`."""


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_LOGIN_ERRORS = {
    "401": _error("No or wrong login (with `WWW-Authenticate: Basic`)"),
    "429": _error("Too many failed logins from this address or for this user"),
    "503": _error("Too many password checks at once"),
}
_PUBLIC: list[dict[str, list[str]]] = []  # no login
_DISPATCHER: list[dict[str, list[str]]] = [{"basicAuth": [], "csrfToken": []}]


def _order(summary: str, form: str, description: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": description,
            "security": _DISPATCHER,
            "requestBody": {"required": True, "content": {_JSON: {"schema": _ref(form)}}},
            "responses": {
                "200": _json(_ref("Receipt"), "The unit's gateway answered (any outcome)"),
                "400": _error("The body is not JSON, or a field is wrong (named in `detail`)"),
                **_LOGIN_ERRORS,
                "403": _error("A viewer, a cross-origin request, or a missing/wrong token"),
                "415": _error("Not sent as application/json"),
                "504": _json(_ref("NoAnswer"), "No gateway of the unit answered within 5 s"),
            },
        }
    }


def _paths() -> dict[str, Any]:
    offset = {
        "name": "camera_offset",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0, "default": 0},
        "description": "First camera of the page (cameras ordered by unit, then id)",
    }
    limit = {
        "name": "camera_limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0, "default": 200},
        "description": "Cameras in the page (more than 1000 is taken as 1000)",
    }
    unit = {
        "name": "unit",
        "in": "query",
        "schema": {"type": "string"},
        "description": "Only this unit's cameras",
    }
    return {
        "/": {
            "get": {
                "summary": "The console's page",
                "responses": {
                    "200": {"description": "HTML", "content": {"text/html": {}}},
                    **_LOGIN_ERRORS,
                },
            }
        },
        "/static/{path}": {
            "get": {
                "summary": "The page's script and style (no login)",
                "security": _PUBLIC,
                "parameters": [
                    {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {"description": "The file"},
                    "404": {"description": "No such file"},
                },
            }
        },
        "/api/state": {
            "get": {
                "summary": "Everything the page shows, with one page of the cameras",
                "parameters": [offset, limit, unit],
                "responses": {
                    "200": _json(_ref("State"), "The state and the user's CSRF token"),
                    "400": _error("A query parameter is not a whole number"),
                    **_LOGIN_ERRORS,
                },
            }
        },
        "/events": {
            "get": {
                "summary": "Server-sent events: the user and token, a snapshot, then every change",
                "description": "Each `data:` line is a JSON object with a `type`: `hello` "
                "(`user`, `role`, `csrf_token`, `map`), `snapshot` (as `/api/state`), "
                "`activation`, `camera`, `camera_removed`, `escalation`, `gateway`. A "
                "comment line every 15 s keeps the stream open.",
                "responses": {
                    "200": {"description": "The stream", "content": {"text/event-stream": {}}},
                    **_LOGIN_ERRORS,
                },
            }
        },
        "/api/activate": _order(
            "Start a unit's cameras (dispatchers)",
            "ActivateForm",
            "Sent to the unit's gateway as a `dispatch` trigger whose source is the "
            "dispatcher; answered with the gateway's receipt.",
        ),
        "/api/cancel": _order(
            "Cancel an activation (dispatchers)",
            "CancelForm",
            "Sent to the unit's gateway; answered with its receipt.",
        ),
        "/healthz": {
            "get": {
                "summary": "Is the MQTT link up (no login)",
                "security": _PUBLIC,
                "responses": {
                    "200": _json({"type": "object"}, "Up, with counters"),
                    "503": _json({"type": "object"}, "The MQTT link is down"),
                },
            }
        },
        "/health": {
            "get": {
                "summary": "Health as docs/observability.md describes it (no login)",
                "security": _PUBLIC,
                "responses": {
                    "200": _json({"type": "object"}, "healthy or degraded"),
                    "503": _json({"type": "object"}, "unhealthy"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (no login)",
                "security": _PUBLIC,
                "responses": {
                    "200": {
                        "description": "Prometheus or OpenMetrics text, by `Accept`",
                        "content": {"text/plain": {}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document (no login)",
                "security": _PUBLIC,
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
    }


def _schemas() -> dict[str, Any]:
    outcome = {"type": "string", "description": "accepted, suppressed, refused, …"}
    nullable_text = {"type": ["string", "null"]}
    return {
        "ActivateForm": ActivateForm.model_json_schema(),
        "CancelForm": CancelForm.model_json_schema(),
        "Receipt": {
            "type": "object",
            "required": ["event_id", "unit_id", "outcome", "activation_id", "reason"],
            "properties": {
                "event_id": {"type": "string"},
                "unit_id": {"type": "string"},
                "outcome": outcome,
                "activation_id": nullable_text,
                "reason": nullable_text,
            },
        },
        "NoAnswer": {
            "type": "object",
            "required": ["outcome", "reason"],
            "properties": {"outcome": {"const": "no_answer"}, "reason": {"type": "string"}},
        },
        "Error": {
            "type": "object",
            "required": ["outcome", "detail"],
            "properties": {"outcome": {"const": "error"}, "detail": {"type": "string"}},
        },
        "State": {
            "type": "object",
            "required": [
                "type",
                "activations",
                "cameras",
                "cameras_total",
                "cameras_offset",
                "cameras_limit",
                "units",
                "escalations",
                "gateways",
                "user",
                "role",
                "csrf_token",
                "map",
            ],
            "properties": {
                "type": {"const": "snapshot"},
                "activations": {"type": "array", "items": {"type": "object"}, "maxItems": 500},
                "cameras": {"type": "array", "items": {"type": "object"}, "maxItems": 1000},
                "cameras_total": {"type": "integer"},
                "cameras_offset": {"type": "integer"},
                "cameras_limit": {"type": "integer"},
                "units": {"type": "array", "items": {"type": "string"}, "maxItems": 1000},
                "escalations": {"type": "array", "items": {"type": "object"}, "maxItems": 500},
                "gateways": {"type": "array", "items": {"type": "object"}},
                "user": {"type": "string"},
                "role": {"enum": ["viewer", "dispatcher"]},
                "csrf_token": {"type": "string", "description": "Send as X-CSRF-Token"},
                "map": _ref("MapSettings"),
            },
        },
        "MapSettings": {
            "type": "object",
            "required": ["tiles", "attribution"],
            "properties": {
                "tiles": {
                    "type": ["string", "null"],
                    "description": "The basemap's tile URL template ({z}/{x}/{y}), if any",
                },
                "attribution": {"type": "string"},
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "trigger-mesh dispatch console",
            "version": API_VERSION,
            "description": _AUTH,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "security": [{"basicAuth": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic"},
                "csrfToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-CSRF-Token",
                    "description": "The `csrf_token` of GET /api/state, for POSTs",
                },
            },
            "schemas": _schemas(),
        },
    }


def openapi_text() -> str:
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"


def write_openapi(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(openapi_text())
    return out
