"""``trigger-mesh asyncapi``: an AsyncAPI 3.0 document of the protocol (docs/asyncapi.yaml).

Everything that the code defines is taken from the code, so the document follows it:

- the channels' addresses and parameters from ``bridge.topics.Topics`` (each address is
  built by its method with ``{name}`` placeholders, then parsed back to its ``TopicKind``);
- the messages' payloads from the pydantic models of ``SCHEMA_MODELS`` (the same JSON
  Schemas as docs/schemas/, their shared definitions in ``components.schemas``);
- the protocol version, the identifier pattern, which payloads carry a signature and
  which channel parameter each payload repeats in a field.

What only docs/protocol.md says (who sends and receives what, QoS, retained topics, the
replies) is in ``FLOWS`` below, checked against the code when the document is built.
``tests/integration/test_asyncapi.py`` keeps the committed file equal to this output and
validates it with the AsyncAPI parser (tools/asyncapi/).
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from bridge.topics import DEFAULT_PREFIX, UNNAMED_SENDER, TopicKind, Topics
from mesh.protocol.jws import JwsMessage
from mesh.protocol.models import PROTOCOL_VERSION, SIGNABLE, Frozen, Ident
from mesh.protocol.schema import SCHEMA_MODELS

ASYNCAPI_VERSION = "3.0.0"
MQTT_BINDING_VERSION = "0.2.0"
_SCHEMAS = "#/components/schemas/"
_JWS = "JwsMessage"

# The parties of the protocol: every operation is tagged with the one that performs it.
ROLES: dict[str, str] = {
    "gateway": "A unit's gateway (`trigger-mesh gateway`): admits triggers, commands the "
    "cameras, waits for their acks, retries, escalates, publishes the activation record, "
    "and sends its activation log to the archive (as `trigger-mesh log sync` does by hand).",
    "camera": "A body or dash camera (`trigger-mesh camera`, or any client written from "
    "docs/protocol.md): announces its presence, decides on every command it hears, acks.",
    "dispatch": "Dispatch: the console (`trigger-mesh dispatch`) and watchers "
    "(`trigger-mesh tail`); sends remote triggers and cancels, shows activations, "
    "receipts, escalations and the camera map.",
    "archive": "The central archive (`trigger-mesh archiver`): stores what crosses the broker "
    "and the edge logs sent to it, and answers each log's sender with its watermark.",
    "sender": "A trigger or cancel sender other than dispatch: manual buttons, an officer's "
    "device, `trigger-mesh trigger`.",
}


@dataclass(frozen=True)
class Flow:
    """One topic of the protocol as docs/protocol.md ("Topics") describes it."""

    address: Callable[[Topics], str]  # built with "{name}" for each variable level
    messages: tuple[str, ...]  # payload types, keys of SCHEMA_MODELS
    summary: str
    senders: tuple[str, ...]
    receivers: tuple[str, ...]
    retained: bool = False
    # Parameter -> the payload field that repeats it in every message of the topic.
    located: Mapping[str, str] = field(default_factory=dict)
    # Parameter descriptions particular to this topic (else PARAMETERS).
    parameters: Mapping[str, str] = field(default_factory=dict)
    # The topic whose messages answer this one's.
    reply: TopicKind | None = None
    # What a receiver subscribes to, where it is not every value ("+") of a parameter.
    subscribes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Subscription QoS of a receiver, where it is not 1.
    receive_qos: Mapping[str, int] = field(default_factory=dict)
    # Per role: how it publishes or subscribes, where that says more than the table.
    notes: Mapping[str, str] = field(default_factory=dict)
    description: str = ""


_COMMAND_NOTE = (
    "A camera answers only a command it acts on, and any command on its own topic "
    "(`cmd/camera`); on the shared topics (cell, unit, all) a camera not concerned says "
    "nothing. Commands are signed by the issuing gateway (docs/security.md)."
)
_COMMANDS = ("record_start", "record_cancel")

FLOWS: dict[TopicKind, Flow] = {
    TopicKind.TRIGGER: Flow(
        address=lambda t: t.trigger("{unit}"),
        messages=("trigger",),
        summary="Triggers into a unit's gateway.",
        senders=("sender", "dispatch"),
        receivers=("gateway", "archive"),
        located={"unit": "unit_id"},
        reply=TopicKind.RECEIPT,
        subscribes={"gateway": {"unit": "{its unit}"}},
        description="The gateway PUBACKs a trigger only once its activation is in its log. "
        "A sender without a receipt sends the same payload again (same `event_id`); "
        "the gateway merges repeats.",
    ),
    TopicKind.RECEIPT: Flow(
        address=lambda t: t.receipt("{unit}"),
        messages=("receipt",),
        summary="The gateway's answer to each trigger and cancel: accepted, suppressed "
        "(merged into a recent activation) or rejected, with the reason.",
        senders=("gateway",),
        receivers=("sender", "dispatch", "archive"),
        located={"unit": "unit_id"},
        subscribes={"sender": {"unit": "{the unit it triggered}"}},
    ),
    TopicKind.COMMAND_CELL: Flow(
        address=lambda t: t.command_cell("{cell}"),
        messages=_COMMANDS,
        summary="Commands to the cameras in one geo cell.",
        senders=("gateway",),
        receivers=("camera",),
        reply=TopicKind.ACK,
        subscribes={"camera": {"cell": "{the cell it is in}"}},
        notes={
            "camera": "A camera subscribes to the cell it is in, and moves the subscription "
            "(subscribing to the new cell before leaving the old) when it changes cell."
        },
        description="The cells whose box meets the bounding box of the command's circle. "
        + _COMMAND_NOTE,
    ),
    TopicKind.COMMAND_UNIT: Flow(
        address=lambda t: t.command_unit("{unit}"),
        messages=_COMMANDS,
        summary="Commands to the cameras of one unit (each unit in `targets.units`).",
        senders=("gateway",),
        receivers=("camera",),
        reply=TopicKind.ACK,
        subscribes={"camera": {"unit": "{its unit}"}},
        description=_COMMAND_NOTE,
    ),
    TopicKind.COMMAND_CAMERA: Flow(
        address=lambda t: t.command_camera("{camera}"),
        messages=_COMMANDS,
        summary="Commands to one camera: each camera in `targets.cameras`, and the "
        "gateway's retries to expected cameras still silent.",
        senders=("gateway",),
        receivers=("camera",),
        reply=TopicKind.ACK,
        subscribes={"camera": {"camera": "{its id}"}},
        notes={
            "camera": "On a connection of its own (client id `<client id>-own`), so that a "
            "flood on a shared topic cannot hold back its own commands."
        },
        description="A command received here is always answered, `out_of_range` included. "
        + _COMMAND_NOTE,
    ),
    TopicKind.COMMAND_ALL: Flow(
        address=lambda t: t.command_all(),
        messages=_COMMANDS,
        summary="Commands to every camera: circles too big for cells.",
        senders=("gateway",),
        receivers=("camera",),
        reply=TopicKind.ACK,
        notes={
            "gateway": "Only gateways flagged `broadcast` may publish here on a broker made "
            "by `trigger-mesh broker-config` (docs/broker.md).",
            "camera": "On a connection of its own (client id `<client id>-all`).",
        },
        description=_COMMAND_NOTE,
    ),
    TopicKind.CANCEL: Flow(
        address=lambda t: t.cancel("{unit}"),
        messages=("cancel",),
        summary="Requests to cancel a false trigger's activation, into the unit's gateway.",
        senders=("sender", "dispatch"),
        receivers=("gateway",),
        located={"unit": "unit_id"},
        reply=TopicKind.RECEIPT,
        subscribes={"gateway": {"unit": "{its unit}"}},
        description="Within the policy's cancel window. The gateway answers with a receipt "
        "whose `event_id` is the `cancel_id`, and if it accepts, sends `record_cancel` to "
        "the command's topics. Nothing is erased.",
    ),
    TopicKind.ESCALATION: Flow(
        address=lambda t: t.escalation("{audience}"),
        messages=("escalation",),
        summary="An expected camera that did not start (offline, no ack, rejected), told to "
        "each audience the policy names.",
        senders=("gateway",),
        receivers=("dispatch", "archive"),
        located={"audience": "audience"},
    ),
    TopicKind.ACK: Flow(
        address=lambda t: t.ack("{issuer}", "{camera}"),
        messages=("ack", "cancel_ack"),
        summary="A camera's answers to the gateway that issued the command.",
        senders=("camera",),
        receivers=("gateway", "archive"),
        located={"camera": "camera_id"},
        subscribes={"gateway": {"issuer": "{its id}"}},
        notes={
            "gateway": "On a connection of its own (client id `{id}-acks`).",
            "archive": "Archives `ack`; a `cancel_ack` reaches the archive in the issuing "
            "gateway's log instead.",
        },
        description="Acks are signed by the camera (`rejected` ones too). A camera SHOULD "
        "NOT send more than 50 acks a second (200 at once).",
    ),
    TopicKind.RECORDING: Flow(
        address=lambda t: t.recording("{issuer}", "{camera}"),
        messages=("recording",),
        summary="A camera's recording started or stopped (why, which files), to each "
        "gateway whose activation it records for.",
        senders=("camera",),
        receivers=("gateway", "archive"),
        located={"camera": "camera_id"},
        subscribes={"gateway": {"issuer": "{its id}"}},
        notes={
            "gateway": "On its ack connection (client id `{id}-acks`); each one is checked "
            "like an ack and appended to its activation log (a `recording` record).",
            "camera": "Signed like its acks. Kept while the link is down (at most 256, the "
            "oldest dropped past that) and sent on reconnect.",
        },
        description="One `start` and one `stop` per recording and issuer; a gateway whose "
        "command joined a running recording gets that recording's `start` when it joins. "
        "A camera may publish only on its own `{camera}` level (the broker's ACL).",
    ),
    TopicKind.ACTIVATION: Flow(
        address=lambda t: t.activation("{unit}", "{activation}"),
        messages=("activation",),
        summary="The state of one activation: while pending, then once more when finished.",
        senders=("gateway",),
        receivers=("dispatch", "archive"),
        located={"unit": "unit_id", "activation": "activation_id"},
        notes={"dispatch": "A watcher of one unit (`tail --unit`) subscribes to that unit's."},
    ),
    TopicKind.PRESENCE: Flow(
        address=lambda t: t.presence("{camera}"),
        messages=("presence",),
        summary="A camera's presence: position, unit, role, recording, online.",
        senders=("camera",),
        receivers=("gateway", "dispatch"),
        retained=True,
        located={"camera": "camera_id"},
        receive_qos={"gateway": 0},
        notes={
            "camera": "On every connect, on a heartbeat (30 s by default), when it moves and "
            "when it starts or stops recording; its last will is the same message with "
            "`online: false`. At most 2,048 bytes, 2 a second on average (6 at once).",
            "gateway": "At QoS 0 on a connection of its own (client id `{id}-presence`, "
            "MQTT 3.1.1, no session: every connect brings the retained copies again).",
        },
        description="An empty retained message removes a camera for good.",
    ),
    TopicKind.GATEWAY: Flow(
        address=lambda t: t.gateway("{gateway}"),
        messages=("gateway",),
        summary="A gateway's status, with counters of accepted, refused and rejected input.",
        senders=("gateway",),
        receivers=("dispatch",),
        retained=True,
        located={"gateway": "gateway_id"},
        notes={
            "gateway": "Every 30 s by default; its last will is the same message with "
            "`online: false`."
        },
    ),
    TopicKind.LOG_RECORDS: Flow(
        address=lambda t: t.log_records("{log_id}", "{gateway}"),
        messages=("log_batch",),
        summary="Batches of an edge activation log's records, on their way to the archive.",
        senders=("gateway",),
        receivers=("archive",),
        located={"log_id": "log_id"},
        reply=TopicKind.LOG_SYNCED,
        parameters={
            "gateway": "The batch's `gateway_id` (it MUST be the same), or "
            f"`{UNNAMED_SENDER}` for a log sent without one. The broker lets a gateway "
            "publish only under its own id."
        },
        notes={"gateway": "`trigger-mesh log sync` sends a log the same way."},
        description="In seq order, at most 500 records or about 256 KiB a batch (a larger "
        "record travels alone; archivers accept up to 16 MiB). Resending is always safe. "
        "The archive stores a log's batches from the first gateway that names itself in "
        "one, and refuses any other gateway's.",
    ),
    TopicKind.LOG_SYNCED: Flow(
        address=lambda t: t.log_synced("{log_id}", "{gateway}"),
        messages=("log_synced",),
        summary="The archive's watermark of one log: every record up to `synced_seq` is stored.",
        senders=("archive",),
        receivers=("gateway",),
        retained=True,
        located={"log_id": "log_id"},
        subscribes={"gateway": {"log_id": "{its log_id}"}},
        parameters={
            "gateway": "The `gateway_id` of the batch it answers, or "
            f"`{UNNAMED_SENDER}` for a log sent without one."
        },
        notes={
            "gateway": "With a clean session, so the retained watermark comes on every connect."
        },
        description="Published after every batch stored, advanced or not. A sender keeps the "
        "highest it has heard. A batch refused (the log is another gateway's) is answered "
        "with `refused` set and `synced_seq` 0, not retained: the sender MUST stop sending "
        "the log for that pass.",
    ),
}

PARAMETERS: dict[str, str] = {
    "unit": "The id of a unit (a car and the cameras of its officers).",
    "camera": "The id of a camera.",
    "issuer": "The id of the gateway that issued the command (the command's `issuer`).",
    "activation": "The id of an activation.",
    "gateway": "The id of a gateway.",
    "log_id": "The id of an edge activation log (a uuid hex, made with the log).",
    "audience": "An audience of the policy's `escalate_to`: `dispatch`, `unit-{unit}` for a "
    "unit, or any other name.",
    "cell": "A geo cell: its geohash of 6 characters (docs/protocol.md, Cells).",
}
# Parameters that are identifiers (``Ident`` in the models): their pattern is added.
_IDENTIFIERS = frozenset(
    {"unit", "camera", "issuer", "activation", "gateway", "log_id", "audience"}
)

# The archive's shared subscription group (`trigger-mesh archiver --group`, default).
_ARCHIVE_GROUP = "archivers"


class SpecError(Exception):
    """FLOWS and the code disagree: fix FLOWS (or the code) before writing the document."""


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise SpecError(what)


def _ident_pattern() -> str:
    pattern = TypeAdapter(Ident).json_schema()["pattern"]
    assert isinstance(pattern, str)
    return pattern


def _doc(model: type[Frozen]) -> str:
    return inspect.cleandoc(model.__doc__) if model.__doc__ else ""


def _payload_type(model: type[Frozen]) -> str:
    default = model.model_fields["type"].default
    assert isinstance(default, str)
    return default


def _wrap(text: str) -> str:
    """Markdown paragraphs and list items ("- " at the start of a line), each wrapped to 96
    columns."""
    blocks = []
    for paragraph in text.split("\n\n"):
        items = ("\n" + paragraph).split("\n- ")
        lines = [_fill(items[0].strip(), "")] if items[0].strip() else []
        lines += [_fill(f"- {item}", "  ") for item in items[1:]]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _fill(text: str, indent: str) -> str:
    return textwrap.fill(
        text, 96, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


def _ref(pointer: str) -> dict[str, str]:
    return {"$ref": pointer}


def _draft07(node: Any) -> Any:
    """A ``$ref`` with siblings becomes ``allOf: [$ref]`` with them: AsyncAPI schemas are
    JSON Schema draft 7, where a reference's siblings are ignored (pydantic writes 2020-12)."""
    if isinstance(node, dict):
        out = {key: _draft07(value) for key, value in node.items()}
        if "$ref" in out and len(out) > 1:
            ref = out.pop("$ref")
            out = {"allOf": [{"$ref": ref}], **out}
        return out
    if isinstance(node, list):
        return [_draft07(item) for item in node]
    return node


def _component_schemas() -> tuple[dict[str, str], dict[str, Any]]:
    """The payload schema name of each message type, and every schema they use."""
    documented: list[type[Frozen]] = [*SCHEMA_MODELS.values(), JwsMessage]
    keys, defs = models_json_schema(
        [(model, "validation") for model in documented],
        ref_template=_SCHEMAS + "{model}",
    )
    names = {
        name: keys[(model, "validation")]["$ref"].removeprefix(_SCHEMAS)
        for name, model in SCHEMA_MODELS.items()
    }
    schemas = _draft07(defs.get("$defs", {}))
    assert isinstance(schemas, dict)
    return names, schemas


def _signature_note(name: str) -> str:
    if name not in SIGNABLE:
        return ""
    return (
        "\n\nSigned: it may travel as a JWS (`JwsMessage`: flattened JSON serialisation, "
        "EdDSA) whose `payload` member is this payload's exact bytes, base64url "
        '(docs/security.md, "What a signature covers"). A receiver with a trust store '
        "verifies the signature before it parses the payload, and refuses, with a reason, "
        "one that fails or an unsigned one where signatures are required."
    )


def _message(name: str, model: type[Frozen], schema: str) -> dict[str, Any]:
    first, _, rest = _doc(model).partition("\n\n")
    plain = _ref(_SCHEMAS + schema)
    payload = {"oneOf": [plain, _ref(_SCHEMAS + _JWS)]} if name in SIGNABLE else plain
    message: dict[str, Any] = {
        "name": name,
        "title": model.__name__,
        "contentType": "application/json",
        "payload": payload,
    }
    if first:
        message["summary"] = first.replace("\n", " ")
    description = (rest + _signature_note(name)).strip()
    if description:
        message["description"] = _wrap(description)
    return message


def _channel(
    kind: TopicKind, flow: Flow, topics: Topics, ident: str
) -> tuple[dict[str, Any], tuple[str, ...]]:
    address = flow.address(topics)
    parsed = topics.parse(address)
    _require(parsed is not None and parsed.kind == kind, f"{address} is not a {kind} topic")
    assert parsed is not None
    names = tuple(arg.strip("{}") for arg in parsed.args)
    _require(
        all(arg == f"{{{n}}}" for arg, n in zip(parsed.args, names, strict=True)),
        f"{address}: every variable level must be one parameter",
    )
    channel: dict[str, Any] = {
        "address": address,
        "title": kind.value,
        "summary": flow.summary,
    }
    description = flow.description
    if flow.retained:
        description = ("Retained. " + description).strip()
    if description:
        channel["description"] = description
    channel["messages"] = {name: _ref(f"#/components/messages/{name}") for name in flow.messages}
    if names:
        parameters: dict[str, Any] = {}
        for name in names:
            text = flow.parameters.get(name)
            if text is None:
                text = PARAMETERS[name]
                if name in _IDENTIFIERS:
                    text += f" Matches `{ident}`."
            parameter: dict[str, Any] = {"description": text}
            located = flow.located.get(name)
            if located is not None:
                for message in flow.messages:
                    model = SCHEMA_MODELS[message]
                    _require(
                        located in model.model_fields and model.model_fields[located].is_required(),
                        f"every {message} must carry {located}, the {name} of its topic",
                    )
                parameter["location"] = f"$message.payload#/{located}"
            parameters[name] = parameter
        channel["parameters"] = parameters
    _require(set(flow.located) <= set(names), f"{kind}: located parameters not in {address}")
    return channel, names


def _operation(
    kind: TopicKind, flow: Flow, *, role: str, action: str, address: str, names: tuple[str, ...]
) -> dict[str, Any]:
    channel = f"#/channels/{kind.value}"
    carried = " and ".join(f"`{m}`" for m in flow.messages)
    bindings: dict[str, Any] = {"bindingVersion": MQTT_BINDING_VERSION}
    notes = [flow.notes[role]] if role in flow.notes else []
    if action == "send":
        summary = f"Publishes {carried} on `{address}`."
        bindings["qos"] = 1
        bindings["retain"] = flow.retained
    else:
        summary = f"Receives {carried} from `{address}`."
        bindings["qos"] = flow.receive_qos.get(role, 1)
        levels = flow.subscribes.get(role, {})
        _require(set(levels) <= set(names), f"{kind}: {role} subscribes to unknown levels")
        subscription = address
        for name in names:
            subscription = subscription.replace(f"{{{name}}}", levels.get(name, "+"))
        if role == "archive":
            notes.insert(
                0,
                f"Shared subscription `$share/{_ARCHIVE_GROUP}/{subscription}`: the broker "
                "gives each message to one archiver of the group.",
            )
        else:
            notes.insert(0, f"Subscribes to `{subscription}`.")
    operation: dict[str, Any] = {
        "action": action,
        "channel": _ref(channel),
        "title": f"{role} {action}s {kind.value}",
        "summary": summary,
    }
    if notes:
        operation["description"] = " ".join(notes)
    operation["messages"] = [_ref(f"{channel}/messages/{m}") for m in flow.messages]
    operation["tags"] = [_ref(f"#/components/tags/{role}")]
    operation["bindings"] = {"mqtt": bindings}
    # The reply: what this role answers with, or waits for, on another topic.
    answering = FLOWS[flow.reply].senders if flow.reply else ()
    waiting = FLOWS[flow.reply].receivers if flow.reply else ()
    if flow.reply and role in (answering if action == "receive" else waiting):
        reply = flow.reply
        answers = FLOWS[reply].messages
        operation["reply"] = {
            "channel": _ref(f"#/channels/{reply.value}"),
            "messages": [_ref(f"#/channels/{reply.value}/messages/{m}") for m in answers],
        }
    return operation


def _info(topics: Topics, signed: list[str]) -> dict[str, Any]:
    retained = [f"`{kind.value}`" for kind, flow in FLOWS.items() if flow.retained]
    description = f"""\
How gateways, cameras, dispatch and the archive talk over MQTT: protocol v{PROTOCOL_VERSION} \
of trigger-mesh (docs/protocol.md).

Generated by `trigger-mesh asyncapi` from the wire models (mesh/protocol/) and the topics \
(bridge/topics.py); do not edit by hand.

- **Prefix.** Every topic starts with a configurable prefix; this document uses \
`{topics.prefix}` (`trigger-mesh asyncapi --prefix` writes another).
- **Payloads** are UTF-8 JSON objects with `type` (which message) and `v` \
({PROTOCOL_VERSION}). Readers ignore fields they do not know; a change that would break a \
reader bumps `v`. Bad payloads are dropped by the receiver with a logged, counted reason.
- **QoS 1** for every publish; retained on {", ".join(retained)}. Clients speak MQTT 5 where \
the broker does, 3.1.1 otherwise; no MQTT 5 feature is needed.
- **Operations** are tagged with the party that performs them: \
{", ".join(f"`{role}`" for role in ROLES)}.
- **Security.** On a broker made by `trigger-mesh broker-config`, TLS with client \
certificates or passwords and an ACL per principal (docs/broker.md). Payloads that can \
start or stop a recording, or hide a camera that never started, are signed \
({", ".join(f"`{name}`" for name in signed)}): they then travel as a JWS of their exact \
bytes (`JwsMessage`, RFC 7515 flattened JSON, EdDSA). A receiver with a trust store \
verifies the signature before it parses the payload (docs/security.md).
- **Time** fields (`*_ns`) are strings of decimal digits, nanoseconds since the Unix epoch \
(UTC): JSON numbers above 2^53 are not exact in most parsers. No other number exceeds \
2^53 - 1."""
    return {
        "title": "trigger-mesh protocol",
        "version": str(PROTOCOL_VERSION),
        "description": _wrap(description),
        "tags": [_ref(f"#/components/tags/{role}") for role in ROLES],
    }


def asyncapi(prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every topic and payload, under ``prefix``."""
    topics = Topics(prefix)
    _require(set(FLOWS) == set(TopicKind), "every topic of bridge/topics.py needs a Flow")
    carried = {message for flow in FLOWS.values() for message in flow.messages}
    _require(carried == set(SCHEMA_MODELS), "every payload, and only those, travels on a topic")
    _require(
        all(_payload_type(model) == name for name, model in SCHEMA_MODELS.items()),
        "every payload is named by its type",
    )
    _require(
        all(role in ROLES for f in FLOWS.values() for role in (*f.senders, *f.receivers)),
        "every sender and receiver is one of ROLES",
    )

    ident = _ident_pattern()
    schema_names, schemas = _component_schemas()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for kind in TopicKind:
        flow = FLOWS[kind]
        channel, names = _channel(kind, flow, topics, ident)
        channels[kind.value] = channel
        for action, roles in (("send", flow.senders), ("receive", flow.receivers)):
            for role in roles:
                operations[f"{role}_{action}s_{kind.value}"] = _operation(
                    kind, flow, role=role, action=action, address=channel["address"], names=names
                )
    messages = {
        name: _message(name, model, schema_names[name]) for name, model in SCHEMA_MODELS.items()
    }
    signed = [name for name in SCHEMA_MODELS if name in SIGNABLE]
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": _info(topics, signed),
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "tags": {role: {"name": role, "description": text} for role, text in ROLES.items()},
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so descriptions read as written."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

HEADER = (
    "# The AsyncAPI document of the trigger-mesh protocol. Generated by\n"
    "# `trigger-mesh asyncapi --out docs/asyncapi.yaml` (`make schema`): do not edit.\n"
)


def render(document: Mapping[str, Any]) -> str:
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return HEADER + body


def write_asyncapi(path: Path, prefix: str = DEFAULT_PREFIX) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(asyncapi(prefix)))
    return path
