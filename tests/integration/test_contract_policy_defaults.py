"""What the policy's `defaults` apply to, with a gateway built from a config file as the
daemon builds it, over a real mosquitto (issue 17, "defaults").

docs/policy.md: a field a kind does not set, in `kinds.<kind>` or in the built-in table,
comes from `defaults`; one it sets is its own. Every built-in kind sets its radius, so
`defaults.radius_m` changes no kind: the gateway says so when it starts, instead of
silently keeping manual's 100 m. A field no kind sets (`ack_deadline_ms`) applies to all.
"""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.config import load_gateway_config, load_policy
from mesh.decide.policy import Policy
from mesh.gateway.build import build_gateway
from mesh.protocol.models import TriggerKind
from tests.harness import CENTER, UNIT, event, running_mesh

REPO = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, topics: Topics, url: str, policy: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"unit: {UNIT}\n"
        f"broker: {url}\n"
        f"topic_prefix: {topics.prefix}\n"
        f"log: {tmp_path / 'log.db'}\n"
        f"position: {{lat: {CENTER.lat}, lon: {CENTER.lon}}}\n"
        f"policy:\n{policy}"
    )
    return path


async def test_a_default_every_kind_sets_for_itself_changes_none_and_the_gateway_says_so(
    mosquitto: MosquittoProcess,
    topics: Topics,
    tmp_path: Path,
) -> None:
    path = write_config(
        tmp_path,
        topics,
        str(mosquitto.url),
        "  defaults: {radius_m: 150, ack_deadline_ms: 400, escalate_to: [dispatch, own_unit]}\n"
        "  kinds: {weapon_draw: {radius_m: 120}}\n",
    )
    cfg, policy = load_gateway_config(path)
    with capture_logs() as logged:
        gateway = build_gateway(cfg, policy, url=mosquitto.url, config_path=path)
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db", gateway=gateway) as mesh:
        manual = await mesh.activate(event(TriggerKind.MANUAL, source_id="m"))
        weapon = await mesh.activate(event(TriggerKind.WEAPON_DRAW, source_id="w"))
    assert manual.radius_m == 100  # the built-in manual radius, not defaults.radius_m
    assert weapon.radius_m == 120  # the config's own, for that kind
    # What no kind sets comes from the defaults, for every kind.
    assert policy.rules(TriggerKind.MANUAL).ack_deadline_ms == 400
    assert policy.rules(TriggerKind.CRASH).escalate_to == ("dispatch", "own_unit")
    # And the gateway warned, as it started, about the one that changed nothing.
    warnings = [e for e in logged if "policy defaults" in str(e["event"])]
    assert [(e["log_level"], e["keys"]) for e in warnings] == [("warning", ["defaults.radius_m"])]


def test_which_defaults_change_no_kind() -> None:
    assert Policy().unused_defaults() == ()
    every_kind_sets_these = Policy.model_validate(
        {"defaults": {"radius_m": 150, "pre_event_s": 30, "cooldown_s": 10, "priority": 2}}
    )
    assert every_kind_sets_these.unused_defaults() == (
        "cooldown_s",
        "pre_event_s",
        "priority",
        "radius_m",
    )
    # dispatch sets its own cancel window, the other kinds do not: it applies to them.
    some = Policy.model_validate({"defaults": {"cancel_window_s": 20}})
    assert some.unused_defaults() == ()
    assert some.rules(TriggerKind.MANUAL).cancel_window_s == 20
    assert some.rules(TriggerKind.DISPATCH).cancel_window_s == 0


def test_the_shipped_example_policy_sets_no_default_that_changes_nothing() -> None:
    assert load_policy(REPO / "configs" / "policy.yaml").unused_defaults() == ()
