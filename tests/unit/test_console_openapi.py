"""The console's OpenAPI document (issue 18 item 7): valid OpenAPI, checked in as
`make schema` writes it, and in step with the routes the app really has."""

from __future__ import annotations

import json
from pathlib import Path

from openapi_spec_validator import validate
from starlette.routing import Mount, Route

from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.dispatch.console.app import create_app
from mesh.dispatch.console.auth import Users
from mesh.dispatch.console.hub import ConsoleHub
from mesh.dispatch.console.openapi import openapi_document, openapi_text

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "console-openapi.json"
# HEAD comes with every GET route (Starlette adds it); the document names the GET.
_IMPLIED = {"HEAD"}


def _app_routes() -> dict[str, set[str]]:
    """Path -> methods of the console's Starlette app (building it opens no connection)."""
    hub = ConsoleHub(BrokerUrl.parse("mqtt://127.0.0.1:1"), Topics())
    app = create_app(hub, Users({}))
    found: dict[str, set[str]] = {}
    for route in app.routes:
        if isinstance(route, Route):
            found[route.path] = set(route.methods or ()) - _IMPLIED
        elif isinstance(route, Mount):
            found[route.path + "/{path}"] = {"GET"}
        else:
            raise AssertionError(f"a route of an unexpected kind: {route!r}")
    return found


def test_the_document_is_valid_openapi() -> None:
    validate(openapi_document())  # raises naming the first problem


def test_the_committed_document_is_what_the_code_writes() -> None:
    assert COMMITTED.read_text() == openapi_text(), "run `make schema` and commit the result"


def test_every_route_is_documented_and_every_documented_path_exists() -> None:
    documented = {
        path: {method.upper() for method in operations}
        for path, operations in openapi_document()["paths"].items()
    }
    assert documented == _app_routes()


def test_posts_are_documented_with_login_and_csrf_token() -> None:
    document = openapi_document()
    schemes = document["components"]["securitySchemes"]
    assert schemes["basicAuth"] == {"type": "http", "scheme": "basic"}
    assert schemes["csrfToken"]["in"] == "header"
    assert schemes["csrfToken"]["name"] == "X-CSRF-Token"
    for path in ("/api/activate", "/api/cancel"):
        post = document["paths"][path]["post"]
        assert post["security"] == [{"basicAuth": [], "csrfToken": []}], path
        assert {"401", "403", "415"} <= set(post["responses"]), path
    # The forms' schemas come from the models the app validates with.
    activate = document["components"]["schemas"]["ActivateForm"]
    assert activate["additionalProperties"] is False
    assert activate["required"] == ["unit_id"]
    assert json.loads(COMMITTED.read_text())["info"]["title"] == "trigger-mesh dispatch console"
