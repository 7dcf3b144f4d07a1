"""The console's ``/metrics`` and ``/health`` (docs/observability.md).

No login, like ``/healthz``: a scraper or a load balancer has no console account, and
what they show is counts and states, never a name, a position or an activation id.
"""

from __future__ import annotations

from collections import Counter

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mesh.dispatch.console.hub import ConsoleHub
from mesh.ops.health import Health, console_health
from mesh.ops.metrics import ConsoleSnapshot, MetricsRegistry, console_families
from mesh.protocol.models import ActivationState


def _pages(hub: ConsoleHub) -> int:
    pages = hub.status().get("pages", 0)
    return pages if isinstance(pages, int) else 0


def health_of(hub: ConsoleHub) -> Health:
    return console_health(link_up=hub.link.is_up, pages=_pages(hub))


def snapshot_of(hub: ConsoleHub) -> ConsoleSnapshot:
    state = hub.state
    gateways = list(state.gateways.values())
    return ConsoleSnapshot(
        counters={**hub.counters, **state.dropped},
        link_up=hub.link.is_up,
        link_connects=hub.link.connects,
        pages=_pages(hub),
        health=health_of(hub),
        activations_by_state=Counter(
            ActivationState(r.state).value for r in state.activations.values()
        ),
        gateways_online=sum(1 for g in gateways if g.online),
        gateways_known=len(gateways),
        escalations_shown=len(state.escalations),
    )


def observe_routes(hub: ConsoleHub) -> list[Route]:
    registry = MetricsRegistry(lambda: console_families(snapshot_of(hub)))

    async def metrics(request: Request) -> Response:
        body, content_type = registry.render(request.headers.get("accept", ""))
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})

    async def health(request: Request) -> Response:
        found = health_of(hub)
        return JSONResponse(found.as_json(), status_code=found.http_status)

    return [Route("/metrics", metrics), Route("/health", health)]
