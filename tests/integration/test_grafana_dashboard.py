"""deploy/grafana/trigger-mesh.json against a real scrape: Debian's Prometheus scrapes a
real gateway and a real dispatch console (on a fixture mosquitto) after a real activation;
every panel's query then runs through Prometheus' /api/v1/query without error, every
metric it names exists in the scrape, and the panels that must show data do. The alert
rules it loads (deploy/prometheus/alerts.yml) evaluate without error on the same data."""

from __future__ import annotations

import asyncio
import json
import math
import re
import uuid
from pathlib import Path
from typing import Any

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.decide.policy import Policy
from mesh.dispatch.console.auth import Role, Users, add_user
from mesh.dispatch.console.server import ConsoleServer
from mesh.gateway.build import build_gateway, config_in_code
from mesh.protocol.models import ActivationState, TriggerKind
from tests.harness import CENTER, UNIT, event, ghost, running_mesh, wait_until
from tests.prometheus_tools import DASHBOARD, Prometheus, prometheus

# Grafana's variables, as a dashboard user with "All" gateways would have them.
VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}
FAST = Policy.model_validate({"defaults": {"ack_deadline_ms": 150, "max_retries": 1}})


def targets() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    found = [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]]
    assert len(found) >= 20
    return found


def concrete(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def names_in(expr: str) -> set[str]:
    return set(re.findall(r"\btrigger_mesh_[a-z0-9_]+", expr)) | (
        {"up"} if re.search(r"\bup\{", expr) else set()
    )


async def call(server: Prometheus, expr: str) -> Any:
    return await asyncio.to_thread(server.query, expr)


async def until(server: Prometheus, expr: str, what: str, timeout_s: float = 30) -> None:
    """Polls (bounded) until ``expr`` has a result: Prometheus scrapes on its own clock."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        answer = await call(server, expr)
        assert answer["status"] == "success", answer
        if answer["data"]["result"]:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not within {timeout_s} s"
        await asyncio.sleep(0.2)


async def test_every_dashboard_query_runs_on_a_real_scrape(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    users = tmp_path / "users.yaml"
    add_user(users, "ana", Role.DISPATCHER, "a long enough password")
    console = ConsoleServer(mosquitto.url, topics, Users.load(users), port=0)
    console_task = asyncio.create_task(console.run())
    gw = build_gateway(
        config_in_code(UNIT, tmp_path / "log.db", topics=topics, position=CENTER, metrics_port=0),
        FAST,
        url=mosquitto.url,
        client_id=f"gw-{uuid.uuid4().hex[:8]}",
    )
    try:
        async with running_mesh(mosquitto.url, topics, tmp_path / "log.db", gateway=gw) as mesh:
            await wait_until(lambda: console.started and console.hub.link.is_up, 15)
            jobs = {
                "trigger-mesh-gateway": f"127.0.0.1:{gw.observer.port}",
                "trigger-mesh-dispatch": f"127.0.0.1:{console.port}",
            }
            with prometheus(tmp_path, jobs) as server:
                await until(server, 'count(up{job=~"trigger-mesh.*"} == 1) == 2', "both up")
                # After the first scrapes, so that rates see the change.
                await ghost(mesh, "bwc-silent", 50, online=True, offline_s=0)
                record = await mesh.activate(event(TriggerKind.WEAPON_DRAW))
                assert record.state is ActivationState.PARTIAL
                # A malformed trigger: refused inputs have no known codes, so no series
                # before the first.
                await mesh.driver.publish(topics.trigger(UNIT), b'{"type": "trigger", "kind": 7}')
                await until(
                    server,
                    "increase(trigger_mesh_missed_cameras_total[1m]) > 0",
                    "the miss scraped",
                )
                await until(
                    server,
                    "count_over_time(trigger_mesh_rejected_inputs_total[1m]) >= 2",
                    "the refusal scraped twice (a rate needs two samples)",
                )
                await until(
                    server,
                    "sum(trigger_mesh_console_activations{state='partial'}) > 0",
                    "the console's view scraped",
                )

                names = await asyncio.to_thread(server.api, "label/__name__/values")
                scraped = set(names["data"])
                for title, raw in targets():
                    expr = concrete(raw)
                    missing = {
                        n
                        for n in names_in(expr)
                        if n not in scraped and f"{n}_bucket" not in scraped
                    }
                    assert not missing, f"{title}: {expr} names {missing}, not in the scrape"
                    answer = await call(server, expr)
                    assert answer["status"] == "success", f"{title}: {expr}: {answer}"
                    result = answer["data"]["result"]
                    assert result, f"{title}: {expr} has no data"
                    if "histogram_quantile" in expr:
                        value = float(result[0]["value"][1])
                        assert not math.isnan(value), (title, expr)
                        assert 0 < value < 30, (title, expr, value)

                # The gateway variable's query (label_values) lists the scraped gateway.
                found = await asyncio.to_thread(
                    server.api,
                    "label/instance/values",
                    **{"match[]": "trigger_mesh_triggers_total"},
                )
                assert found["data"] == [jobs["trigger-mesh-gateway"]]

                # alerts.yml loaded into the same Prometheus evaluates without error, and
                # the first missed camera fires CamerasMissed.
                await until(server, 'ALERTS{alertname="CamerasMissed"}', "CamerasMissed")
                rules = await asyncio.to_thread(server.api, "rules")
                [group] = rules["data"]["groups"]
                assert {r["health"] for r in group["rules"]} == {"ok"}, group["rules"]
    finally:
        console_task.cancel()
        await asyncio.gather(console_task, return_exceptions=True)
