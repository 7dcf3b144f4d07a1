"""Prometheus metrics of the gateway and the dispatch console (docs/observability.md).

The daemons already count everything in ``Counter``s keyed like ``triggers.<kind>.<source>``
(the gateway status carries them). The metric families here are *read from those counters
at scrape time* by a collector, so nothing is counted twice and the status message and
``/metrics`` can never disagree. Only the ack latency histogram holds state of its own.

``gateway_families`` / ``console_families`` are pure: a snapshot in, metric families out.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from mesh import __version__
from mesh.decide.activation import AckEffect
from mesh.decide.admission import REFUSAL_CODES
from mesh.ops.health import Health, Status
from mesh.protocol.models import (
    ActivationState,
    CancelOutcome,
    EscalationReason,
    SourceType,
    TriggerKind,
)

PREFIX = "trigger_mesh"

# From a loopback round trip (well under 1 ms with TCP_NODELAY) to a camera on a slow
# cellular link, retried (seconds).
ACK_LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

_TRIGGER_KINDS = frozenset(k.value for k in TriggerKind)
_FINISHED_STATES = frozenset(s.value for s in ActivationState) - {ActivationState.PENDING.value}

SourceHealth = Mapping[str, int | float | str | bool]


@dataclass(frozen=True)
class GatewaySnapshot:
    """The gateway's observable state at one moment (plain values: no I/O to render it)."""

    # Gateway and coordinator counters (not the sources': those are in ``sources``).
    counters: Mapping[str, int]
    link_up: bool
    link_connects: int
    in_progress: int
    health: Health
    sources: Mapping[str, SourceHealth] = field(default_factory=dict)
    # The store-and-forward queue's depth (mesh/gateway/outbox.py); None where there is none.
    queue_depth: int | None = None
    # Whether that queue is in its file (False: held in memory, its file cannot be opened).
    queue_durable: bool | None = None


@dataclass(frozen=True)
class ConsoleSnapshot:
    counters: Mapping[str, int]
    link_up: bool
    link_connects: int
    pages: int
    health: Health
    activations_by_state: Mapping[str, int] = field(default_factory=dict)
    gateways_online: int = 0
    gateways_known: int = 0
    escalations_shown: int = 0


# Every family: its name (after the prefix), type, labels and help. docs/observability.md
# lists the same, with where each number comes from.
_SPECS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "triggers": (
        "counter",
        ("kind", "source"),
        "Triggers received, by trigger kind and source type.",
    ),
    "triggers_suppressed": ("counter", (), "Triggers merged into an activation in progress."),
    "triggers_refused": ("counter", ("reason",), "Triggers refused by admission, by reason."),
    "activations_started": ("counter", (), "Activations accepted, logged and started."),
    "activations_resumed": ("counter", (), "Unfinished activations resumed after a restart."),
    "activations_finished": (
        "counter",
        ("state",),
        "Activations finished, by final state (confirmed, partial, missed, cancelled).",
    ),
    "activations_in_progress": ("gauge", (), "Activations started and not yet finished."),
    "missed_cameras": (
        "counter",
        ("reason",),
        "Expected cameras that did not start (each one escalated), by reason.",
    ),
    "acks": ("counter", ("effect",), "Camera acks, by what they changed."),
    "presence_events": (
        "counter",
        ("event",),
        "Camera presence intake and registry: applied, held (over a camera's rate), "
        "dropped_rate, dropped_queue, logged, unlogged, evicted, expired, refused_full.",
    ),
    "presence_cameras": ("gauge", (), "Cameras in the gateway's presence registry."),
    "relay_messages": (
        "counter",
        ("event",),
        "The cell relay (mesh/gateway/cell_relay.py): in, out, echo, not_sent_back, "
        "not_wanted, too_large, out_dropped, in_dropped_car_down; subscribed, unsubscribed "
        "(cells at central); cells_dropped (over max_cells), points_ignored.",
    ),
    "relay_cells": ("gauge", (), "Cells the cell relay subscribes to at central now."),
    "cancels": ("counter", ("outcome",), "Cancel requests, by outcome."),
    "rejected_inputs": (
        "counter",
        ("input", "reason"),
        "Inputs refused as malformed, mismatched or untrusted, by input and reason.",
    ),
    "command_retries": ("counter", (), "Commands re-sent directly to silent cameras."),
    "commands_published": ("counter", (), "Record-start commands published (PUBACKed)."),
    "publish_link_down": ("counter", (), "Command publishes that found the broker link down."),
    "log_write_failures": ("counter", (), "Activation log appends that failed."),
    "outbox_messages": (
        "counter",
        ("event",),
        "Store-and-forward messages: queued, sent (PUBACKed), expired (dropped unsent), "
        "undeliverable (given up).",
    ),
    "outbox_write_failures": ("counter", (), "Messages that could not be written to the outbox."),
    "outbox_depth": ("gauge", (), "Messages in the store-and-forward queue awaiting the broker."),
    "outbox_durable": (
        "gauge",
        (),
        "1 while the outbox is in its file, 0 while it is held in memory (not durable).",
    ),
    "outbox_file_events": (
        "counter",
        ("event",),
        "The outbox's file: memory_fallbacks (it could not be opened: the outbox is held in "
        "memory), reopened (opened again, what memory held moved into it), reopen_failures.",
    ),
    "source_start_failures": (
        "counter",
        ("source",),
        "Trigger source start attempts that failed, by source.",
    ),
    "source_events": (
        "counter",
        ("source", "event"),
        "In-process trigger source (BLE, CAN) counts since start, by source and event.",
    ),
    "source_level": (
        "gauge",
        ("source", "key"),
        "In-process trigger source (BLE, CAN) current levels, by source and key.",
    ),
    "cancel_acks": (
        "counter",
        ("effect",),
        "Camera answers to record-cancels: stopped, kept_recording, refused, untrusted; "
        "unknown_activation, not_logged (over the per-camera cap).",
    ),
    "recordings": (
        "counter",
        ("event",),
        "Cameras' recording messages: start, stop (trusted, logged), untrusted (logged as "
        "evidence), unknown_activation and untrusted_unknown (about no activation of ours: "
        "counted only), repeated, over_cap (past the rows logged per camera and activation).",
    ),
    "log_retention_refused": ("counter", (), "Retention passes the activation log refused."),
    "unmapped_counters": (
        "gauge",
        (),
        "Counter keys of the daemon that no family exports (0 unless the code gained a key "
        "these metrics do not know).",
    ),
    "build_info": (
        "gauge",
        ("version", "python", "implementation", "platform"),
        "Always 1: the trigger-mesh version and the Python running it.",
    ),
    "mqtt_reconnects": ("counter", (), "Broker connections after the first one."),
    "mqtt_connected": ("gauge", (), "1 while the broker link is up."),
    "health_status": (
        "gauge",
        ("status",),
        "1 for the current health status (as /health says), 0 for the others.",
    ),
    "console_pages_resynced": (
        "counter",
        (),
        "Console pages too slow for the live feed, sent the whole state again.",
    ),
    "console_logins_refused": (
        "counter",
        ("reason",),
        "Console logins refused: bad_credentials, backed_off (HTTP 429), busy (HTTP 503).",
    ),
    "console_forgeries_refused": ("counter", (), "Console POSTs refused as cross-site."),
    "console_cameras_dropped": (
        "counter",
        ("reason",),
        "Cameras the console dropped: evicted (past --max-cameras), expired (unheard).",
    ),
    "console_pages": ("gauge", (), "Console pages connected to the live feed."),
    "console_activations": ("gauge", ("state",), "Activations the console shows, by state."),
    "console_gateways": ("gauge", (), "Gateways the console knows of."),
    "console_gateways_online": ("gauge", (), "Gateways whose retained status says online."),
    "console_escalations": ("gauge", (), "Escalations the console shows."),
}

# Counter keys that are one family each, without labels.
_SCALAR_KEYS = {
    "triggers.suppressed": "triggers_suppressed",
    "activations.started": "activations_started",
    "activations.resumed": "activations_resumed",
    "retries": "command_retries",
    "publish.commands": "commands_published",
    "publish.link_down": "publish_link_down",
    "log.write_failures": "log_write_failures",
    "log.retention_refused": "log_retention_refused",
    "outbox.write_failures": "outbox_write_failures",
    "presence.cameras": "presence_cameras",
    "relay.cells": "relay_cells",
}
# Families whose label values are all known: every one is shown from the start, at 0, so
# that ``increase(...) > 0`` sees the first event (a series that appears at 6 shows no
# increase). The key of each value is ``<head>.<value>`` (_LABELLED_HEADS).
_KNOWN_VALUES: dict[str, tuple[str, ...]] = {
    # Admission's codes; a signature's (unsigned, bad_signature, …) appear at their first.
    "triggers_refused": REFUSAL_CODES,
    "activations_finished": tuple(sorted(_FINISHED_STATES)),
    "missed_cameras": tuple(r.value for r in EscalationReason),
    "acks": (
        *(e.value for e in AckEffect),
        "late",
        "unknown_activation",
        "dropped_rate",
        "repeated",
        "over_rate_first",
    ),
    "cancels": ("accepted", "refused"),
    "cancel_acks": (
        *(o.value for o in CancelOutcome),
        "untrusted",
        "unknown_activation",
        "not_logged",
    ),
    "recordings": (
        "start",
        "stop",
        "untrusted",
        "unknown_activation",
        "untrusted_unknown",
        "repeated",
        "over_cap",
    ),
    "outbox_messages": ("queued", "sent", "expired", "undeliverable"),
    "outbox_file_events": ("memory_fallbacks", "reopened", "reopen_failures"),
    "presence_events": (
        "applied",
        "held",
        "dropped_rate",
        "dropped_queue",
        "logged",
        "unlogged",
        "evicted",
        "expired",
        "refused_full",
    ),
    "relay_messages": (
        "in",
        "out",
        "echo",
        "not_sent_back",
        "not_wanted",
        "too_large",
        "out_dropped",
        "in_dropped_car_down",
        "subscribed",
        "unsubscribed",
        "cells_dropped",
        "points_ignored",
    ),
    "console_logins_refused": ("bad_credentials", "backed_off", "busy"),
    "console_cameras_dropped": ("evicted", "expired"),
}
# Counter keys ``<head>.<value>``: one family, the value (a known one) as its one label.
_LABELLED_HEADS = {
    "escalations": "missed_cameras",
    "acks": "acks",
    "cancels": "cancels",
    "cancel_acks": "cancel_acks",
    "recordings": "recordings",
    "outbox": "outbox_messages",
    "presence": "presence_events",
    "relay": "relay_messages",
}
_OUTBOX_FILE_KEYS = frozenset(f"outbox.{e}" for e in _KNOWN_VALUES["outbox_file_events"])

# Shown on every scrape, even before their first event.
_GATEWAY_ALWAYS = (
    "triggers",
    "triggers_suppressed",
    "triggers_refused",
    "activations_started",
    "activations_finished",
    "activations_in_progress",
    "missed_cameras",
    "acks",
    "cancels",
    "cancel_acks",
    "recordings",
    "presence_events",
    "rejected_inputs",
    "command_retries",
    "commands_published",
    "publish_link_down",
    "log_write_failures",
    "outbox_messages",
    "outbox_write_failures",
    "outbox_file_events",
    "mqtt_reconnects",
)
# The source levels a source reports in its health (triggers/*/source.py); every other
# number there is a count since start.
SOURCE_LEVELS = frozenset({"sensors_seen", "sensors_low_battery", "signals_lost", "queued"})


def build_labels() -> list[str]:
    """``build_info``'s labels: what is running, for a dashboard and for a rollout."""
    return [
        __version__,
        platform.python_version(),
        platform.python_implementation(),
        f"{sys.platform}-{platform.machine()}",
    ]


class _Families:
    """Metric families by name, created on first use, in a stable order; a family with
    known label values starts with each of them at 0."""

    def __init__(self, always: Iterable[str] = ()) -> None:
        self._by_name: dict[str, Metric] = {}
        self._values: dict[str, dict[tuple[str, ...], float]] = {}
        for name in always:
            self.family(name)

    def family(self, name: str) -> Metric:
        family = self._by_name.get(name)
        if family is None:
            kind, labels, doc = _SPECS[name]
            make = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = make(f"{PREFIX}_{name}", doc, labels=list(labels))
            self._by_name[name] = family
            self._values[name] = {}
            for value in _KNOWN_VALUES.get(name, ()):
                self._values[name][(value,)] = 0
            if name == "triggers":
                for kind_ in TriggerKind:
                    for source in SourceType:
                        self._values[name][(kind_.value, source.value)] = 0
            elif not labels:
                self._values[name][()] = 0
        return family

    def add(self, name: str, labels: Iterable[str], value: float) -> None:
        self.family(name)
        key = tuple(labels)
        self._values[name][key] = self._values[name].get(key, 0) + value

    def all(self) -> list[Metric]:
        for name, family in self._by_name.items():
            assert isinstance(family, CounterMetricFamily | GaugeMetricFamily)
            for labels, value in self._values[name].items():
                family.add_metric(list(labels), value)
        return list(self._by_name.values())


def gateway_family(key: str) -> tuple[str, list[str]] | None:
    """The family and labels of a gateway counter key (mesh/gateway/coordinator.py and
    daemon.py); None for a key no family knows (counted in ``unmapped_counters``)."""
    if key in _SCALAR_KEYS:
        return _SCALAR_KEYS[key], []
    if key in _OUTBOX_FILE_KEYS:
        return "outbox_file_events", [key.removeprefix("outbox.")]
    parts = key.split(".")
    head, rest = parts[0], parts[1:]
    if head in _LABELLED_HEADS and len(rest) == 1:
        name = _LABELLED_HEADS[head]
        return (name, rest) if rest[0] in _KNOWN_VALUES[name] else None
    if head == "activations" and len(rest) == 1 and rest[0] in _FINISHED_STATES:
        return "activations_finished", rest
    if head == "triggers" and len(rest) == 2 and rest[0] == "refused":
        return "triggers_refused", rest[1:]
    if head == "triggers" and len(rest) == 2 and rest[0] in _TRIGGER_KINDS:
        return "triggers", rest
    if head == "rejected" and len(rest) == 2:
        return "rejected_inputs", rest
    if key == "ignored.topic":
        return "rejected_inputs", ["topic", "unknown_topic"]
    if head == "sources" and len(rest) == 2 and rest[1] == "start_failures":
        return "source_start_failures", rest[:1]
    return None


_CONSOLE_KEYS = {
    "pages.resynced": ("console_pages_resynced", []),
    "forgery.refused": ("console_forgeries_refused", []),
    "logins.failed": ("console_logins_refused", ["bad_credentials"]),
    "logins.refused.429": ("console_logins_refused", ["backed_off"]),
    "logins.refused.503": ("console_logins_refused", ["busy"]),
    "cameras.evicted": ("console_cameras_dropped", ["evicted"]),
    "cameras.expired": ("console_cameras_dropped", ["expired"]),
}
_CONSOLE_ALWAYS = (
    "rejected_inputs",
    "mqtt_reconnects",
    "console_pages_resynced",
    "console_forgeries_refused",
)


def console_family(key: str) -> tuple[str, list[str]] | None:
    """The family and labels of a console counter key (mesh/dispatch/console/)."""
    if key in _CONSOLE_KEYS:
        name, labels = _CONSOLE_KEYS[key]
        return name, list(labels)
    parts = key.split(".")
    if parts[0] == "rejected" and len(parts) == 3:
        return "rejected_inputs", parts[1:]
    return None


def _source_values(f: _Families, source: str, health: SourceHealth) -> None:
    for key, value in sorted(health.items()):
        if isinstance(value, str):
            continue
        if key.startswith("rejected.") and not isinstance(value, bool):
            f.add("rejected_inputs", [source, key.removeprefix("rejected.")], value)
        elif isinstance(value, bool | float) or key in SOURCE_LEVELS:
            f.add("source_level", [source, key], float(value))
        else:
            f.add("source_events", [source, key], value)


def _counters(
    f: _Families,
    counters: Mapping[str, int],
    mapping: Callable[[str], tuple[str, list[str]] | None],
) -> None:
    unmapped = 0
    for key, value in sorted(counters.items()):
        found = mapping(key)
        if found is None:
            unmapped += 1
        else:
            f.add(found[0], found[1], value)
    f.add("unmapped_counters", [], unmapped)


def _common(f: _Families, *, link_up: bool, connects: int, health: Health) -> None:
    f.add("mqtt_reconnects", [], max(connects - 1, 0))
    f.add("mqtt_connected", [], int(link_up))
    for status in Status:
        f.add("health_status", [status.value], int(health.status is status))
    f.add("build_info", build_labels(), 1)


def gateway_families(snapshot: GatewaySnapshot) -> list[Metric]:
    f = _Families(_GATEWAY_ALWAYS)
    f.add("activations_in_progress", [], snapshot.in_progress)
    _counters(f, snapshot.counters, gateway_family)
    for source, health in sorted(snapshot.sources.items()):
        _source_values(f, source, health)
    if snapshot.queue_depth is not None:
        f.add("outbox_depth", [], snapshot.queue_depth)
    if snapshot.queue_durable is not None:
        f.add("outbox_durable", [], int(snapshot.queue_durable))
    _common(f, link_up=snapshot.link_up, connects=snapshot.link_connects, health=snapshot.health)
    return f.all()


def console_families(snapshot: ConsoleSnapshot) -> list[Metric]:
    f = _Families(_CONSOLE_ALWAYS)
    for name in ("console_logins_refused", "console_cameras_dropped"):
        f.family(name)
    _counters(f, snapshot.counters, console_family)
    f.add("console_pages", [], snapshot.pages)
    for state in ActivationState:
        f.add("console_activations", [state.value], snapshot.activations_by_state.get(state, 0))
    f.add("console_gateways", [], snapshot.gateways_known)
    f.add("console_gateways_online", [], snapshot.gateways_online)
    f.add("console_escalations", [], snapshot.escalations_shown)
    _common(f, link_up=snapshot.link_up, connects=snapshot.link_connects, health=snapshot.health)
    return f.all()


class _SnapshotCollector:
    """Reads the daemon's state when scraped (on the event loop: the counters are not
    shared with other threads)."""

    def __init__(self, families: Callable[[], list[Metric]]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families()


class MetricsRegistry:
    """One registry per daemon (never prometheus_client's global one: tests run several
    gateways in one process)."""

    def __init__(self, families: Callable[[], list[Metric]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SnapshotCollector(families))
        # The standard process_* series (CPU, memory, open files), as every exporter has them.
        ProcessCollector(registry=self.registry)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition text (OpenMetrics if the scraper asks for it) and its type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class GatewayMetrics(MetricsRegistry):
    def __init__(self, snapshot: Callable[[], GatewaySnapshot]) -> None:
        super().__init__(lambda: gateway_families(snapshot()))
        self.ack_latency = Histogram(
            "ack_latency_seconds",
            "From the command's publish to the camera's ack, per camera's first answer.",
            namespace=PREFIX,
            buckets=ACK_LATENCY_BUCKETS_S,
            registry=self.registry,
        )

    def observe_ack_latency(self, latency_ms: float | None) -> None:
        if latency_ms is not None:
            self.ack_latency.observe(latency_ms / 1000)
