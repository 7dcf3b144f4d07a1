"""Prometheus metrics of the gateway and the dispatch console (docs/observability.md).

The daemons already count everything in ``Counter``s keyed like ``triggers.<kind>.<source>``
(the gateway status carries them). The metric families here are *read from those counters
at scrape time* by a collector, so nothing is counted twice and the status message and
``/metrics`` can never disagree. Only the ack latency histogram holds state of its own.

``gateway_families`` / ``console_families`` are pure: a snapshot in, metric families out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from mesh.ops.health import Health, Status
from mesh.protocol.models import ActivationState, TriggerKind

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
    "source_health": (
        "gauge",
        ("source", "key"),
        "In-process trigger source (BLE, CAN) health values, by source and key "
        "(counts since start and current levels, as the source reports them).",
    ),
    "gateway_events": (
        "counter",
        ("key",),
        "Other gateway counters, by their key in the gateway status.",
    ),
    "mqtt_reconnects": ("counter", (), "Broker connections after the first one."),
    "mqtt_connected": ("gauge", (), "1 while the broker link is up."),
    "health_status": (
        "gauge",
        ("status",),
        "1 for the current health status (as /health says), 0 for the others.",
    ),
    "console_events": ("counter", ("key",), "Other console counters, by key."),
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
    "outbox.write_failures": "outbox_write_failures",
    "presence.cameras": "presence_cameras",
}
# The outbox's own file (mesh/gateway/forwarder.py), apart from the messages' traffic.
_OUTBOX_FILE_KEYS = frozenset(
    {"outbox.memory_fallbacks", "outbox.reopened", "outbox.reopen_failures"}
)
# Counter keys ``<head>.<value>``: one family, the value as its one label.
_LABELLED_HEADS = {
    "escalations": "missed_cameras",
    "acks": "acks",
    "cancels": "cancels",
    "outbox": "outbox_messages",
    "presence": "presence_events",
}

# Shown on every scrape, even at zero: a rate() needs the series before its first event.
_GATEWAY_ALWAYS = (
    "triggers",
    "activations_started",
    "activations_finished",
    "activations_in_progress",
    "missed_cameras",
    "acks",
    "rejected_inputs",
    "log_write_failures",
    "mqtt_reconnects",
)


class _Families:
    """Metric families by name, created on first use, in a stable order."""

    def __init__(self, always: Iterable[str] = ()) -> None:
        self._by_name: dict[str, Metric] = {}
        for name in always:
            self.family(name)

    def family(self, name: str) -> Metric:
        family = self._by_name.get(name)
        if family is None:
            kind, labels, doc = _SPECS[name]
            make = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = make(f"{PREFIX}_{name}", doc, labels=list(labels))
            self._by_name[name] = family
        return family

    def add(self, name: str, labels: Iterable[str], value: float) -> None:
        family = self.family(name)
        assert isinstance(family, CounterMetricFamily | GaugeMetricFamily)
        family.add_metric(list(labels), value)

    def all(self) -> list[Metric]:
        return list(self._by_name.values())


def _gateway_family(key: str) -> tuple[str, list[str]]:
    """The family and labels of a gateway/coordinator counter key (mesh/gateway/coordinator.py)."""
    if key in _SCALAR_KEYS:
        return _SCALAR_KEYS[key], []
    if key in _OUTBOX_FILE_KEYS:
        return "outbox_file_events", [key.removeprefix("outbox.")]
    parts = key.split(".")
    head, rest = parts[0], parts[1:]
    if head in _LABELLED_HEADS and len(rest) == 1:
        return _LABELLED_HEADS[head], rest
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
    return "gateway_events", [key]


def _source_values(f: _Families, source: str, health: SourceHealth) -> None:
    for key, value in sorted(health.items()):
        if isinstance(value, str):
            continue
        if key.startswith("rejected.") and not isinstance(value, bool):
            f.add("rejected_inputs", [source, key.removeprefix("rejected.")], value)
        else:
            f.add("source_health", [source, key], float(value))


def _common(f: _Families, *, link_up: bool, connects: int, health: Health) -> None:
    f.add("mqtt_reconnects", [], max(connects - 1, 0))
    f.add("mqtt_connected", [], int(link_up))
    for status in Status:
        f.add("health_status", [status.value], int(health.status is status))


def gateway_families(snapshot: GatewaySnapshot) -> list[Metric]:
    f = _Families(_GATEWAY_ALWAYS)
    f.add("activations_in_progress", [], snapshot.in_progress)
    for key, value in sorted(snapshot.counters.items()):
        name, labels = _gateway_family(key)
        f.add(name, labels, value)
    for source, health in sorted(snapshot.sources.items()):
        _source_values(f, source, health)
    if snapshot.queue_depth is not None:
        f.add("outbox_depth", [], snapshot.queue_depth)
    if snapshot.queue_durable is not None:
        f.add("outbox_durable", [], int(snapshot.queue_durable))
    _common(f, link_up=snapshot.link_up, connects=snapshot.link_connects, health=snapshot.health)
    return f.all()


def console_families(snapshot: ConsoleSnapshot) -> list[Metric]:
    f = _Families(("rejected_inputs", "mqtt_reconnects"))
    for key, value in sorted(snapshot.counters.items()):
        parts = key.split(".")
        if parts[0] == "rejected" and len(parts) == 3:
            f.add("rejected_inputs", parts[1:], value)
        else:
            f.add("console_events", [key], value)
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
