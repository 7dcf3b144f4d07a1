"""What receives MQTT input, driven without a broker (docs/fuzzing.md): the topic parser,
broker URLs, the archive's intake, the activation watcher, the dispatch console's hub and
the log sync's watermark. Arbitrary and mutated messages never raise; valid ones land
where they should; every refusal is counted."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.mqtt.client import Inbound
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import ParsedTopic, TopicKind, Topics
from mesh.archive.intake import Item, accept
from mesh.dispatch.console.hub import ConsoleHub
from mesh.dispatch.watch import ActivationWatcher
from mesh.journal.chain import GENESIS, record_hash
from mesh.journal.store import ActivationLog
from mesh.journal.sync import LogSync
from mesh.protocol.codec import PayloadError, decode, encode
from mesh.protocol.log_wire import LogBatch, LogBatchRecord, LogSynced
from mesh.protocol.models import (
    ActivationRecord,
    ActivationState,
    CameraAck,
    CameraPresence,
    Escalation,
    GatewayStatus,
    TriggerEvent,
    TriggerReceipt,
)
from tests.fuzz_helpers import apply, batch, budget, dumps, instances, json_values, mutations

TOPICS = Topics("fz/mesh/v2")
URL = BrokerUrl.parse("mqtt://127.0.0.1:1")  # never connected to
LEVEL = st.one_of(
    st.sampled_from(
        [
            *("trigger", "cmd", "all", "cell", "unit", "camera", "cancel", "escalation", "ack"),
            *("activation", "receipt", "presence", "gateway", "log", "records", "synced", "", "+"),
        ]
    ),
    st.text(max_size=12),
)
TOPIC = st.one_of(
    st.text(max_size=40),
    st.lists(LEVEL, min_size=1, max_size=5).map("/".join),
    st.lists(LEVEL, min_size=1, max_size=5).map(lambda levels: "/".join([TOPICS.prefix, *levels])),
)


# --- topics ----------------------------------------------------------------------------------
BUILDERS: dict[TopicKind, Callable[..., str]] = {
    TopicKind.TRIGGER: TOPICS.trigger,
    TopicKind.COMMAND_ALL: TOPICS.command_all,
    TopicKind.COMMAND_CELL: TOPICS.command_cell,
    TopicKind.COMMAND_UNIT: TOPICS.command_unit,
    TopicKind.COMMAND_CAMERA: TOPICS.command_camera,
    TopicKind.CANCEL: TOPICS.cancel,
    TopicKind.ESCALATION: TOPICS.escalation,
    TopicKind.ACK: TOPICS.ack,
    TopicKind.RECORDING: TOPICS.recording,
    TopicKind.ACTIVATION: TOPICS.activation,
    TopicKind.RECEIPT: TOPICS.receipt,
    TopicKind.PRESENCE: TOPICS.presence,
    TopicKind.GATEWAY: TOPICS.gateway,
    TopicKind.LOG_RECORDS: TOPICS.log_records,
    TopicKind.LOG_SYNCED: TOPICS.log_synced,
}


def test_every_topic_kind_has_a_builder() -> None:
    assert set(BUILDERS) == set(TopicKind)


@budget(40)
@given(batch(TOPIC, 30))
def test_any_topic_parses_to_none_or_to_what_builds_it_again(topics: list[str]) -> None:
    for topic in topics:
        parsed = TOPICS.parse(topic)
        assert parsed is None or isinstance(parsed, ParsedTopic)
        if parsed is not None:
            assert BUILDERS[parsed.kind](*parsed.args) == topic


@budget(40)
@given(st.sampled_from(sorted(BUILDERS)), batch(st.text(max_size=10), 3))
def test_built_topics_parse_back_to_their_levels(kind: TopicKind, levels: list[str]) -> None:
    levels = [level.replace("/", "") for level in levels]
    builder = BUILDERS[kind]
    arity = builder.__code__.co_argcount - 1  # bound method: self is not an argument
    topic = builder(*levels[:arity])
    assert TOPICS.parse(topic) == ParsedTopic(kind, tuple(levels[:arity]))


# --- broker URLs -----------------------------------------------------------------------------
HOST = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]{1,8}){0,2}", fullmatch=True),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda ip: ".".join(map(str, ip))),
)


@budget(40)
@given(batch(st.one_of(st.text(max_size=40), st.text(max_size=30).map("mqtt://".__add__)), 30))
def test_any_text_is_a_broker_url_or_a_value_error(texts: list[str]) -> None:
    for text in texts:
        try:
            url = BrokerUrl.parse(text)
        except ValueError as exc:
            assert str(exc), text  # noqa: PT017 (one of a batch)
            continue
        assert url.scheme in ("mqtt", "mqtts")
        assert url.host
        assert 1 <= url.port <= 65535


@budget(55)
@given(
    st.sampled_from(["mqtt", "mqtts"]),
    HOST,
    st.none() | st.integers(1, 65535),
    st.none() | st.text(min_size=1, max_size=8),
    st.none() | st.text(min_size=1, max_size=8),
)
def test_a_broker_url_says_what_it_was_given(
    scheme: str, host: str, port: int | None, user: str | None, password: str | None
) -> None:
    auth = ""
    if user is not None:
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "") + "@"
    text = f"{scheme}://{auth}{host}" + (f":{port}" if port is not None else "")
    url = BrokerUrl.parse(text)
    expected_port = port if port is not None else {"mqtt": 1883, "mqtts": 8883}[scheme]
    assert (url.scheme, url.host, url.port) == (scheme, host, expected_port)
    assert (url.username, url.password) == (user, password if user is not None else None)


def test_port_zero_is_refused_not_replaced_by_the_default() -> None:
    with pytest.raises(ValueError, match="port"):
        BrokerUrl.parse("mqtt://broker.example:0")


def test_an_unclosed_ipv6_bracket_is_refused_naming_the_url() -> None:
    with pytest.raises(ValueError, match=r"broker URL 'mqtt://\[::1:1883'"):
        BrokerUrl.parse("mqtt://[::1:1883")


# --- the archive's intake ----------------------------------------------------------------------
def own_topic(model: Any) -> str:
    """The topic a valid payload of this type travels on, built from its own ids."""
    if isinstance(model, TriggerEvent):
        return TOPICS.trigger(model.unit_id)
    if isinstance(model, TriggerReceipt):
        return TOPICS.receipt(model.unit_id)
    if isinstance(model, ActivationRecord):
        return TOPICS.activation(model.unit_id, model.activation_id)
    if isinstance(model, CameraAck):
        return TOPICS.ack("gw-1", model.camera_id)
    if isinstance(model, Escalation):
        return TOPICS.escalation(model.audience)
    assert isinstance(model, LogBatch)
    return TOPICS.log_records(model.log_id, model.gateway_id)


ARCHIVED = [TriggerEvent, TriggerReceipt, ActivationRecord, CameraAck, Escalation]


@budget(40)
@given(st.data())
def test_intake_takes_a_valid_payload_on_its_own_topic_and_no_other(data: st.DataObject) -> None:
    model_type = data.draw(st.sampled_from(ARCHIVED))
    payload = dumps(data.draw(instances(model_type)))
    model = decode(model_type, payload)
    topic = own_topic(model)
    item = accept(TOPICS, topic, payload)
    assert isinstance(item, Item)
    assert (item.model, item.raw, item.kind) == (model, payload.decode(), TOPICS.parse(topic).kind)
    # The same payload on a topic naming another unit, activation, camera or audience.
    parsed = TOPICS.parse(topic)
    assert parsed is not None
    other = BUILDERS[parsed.kind](*[f"{arg}x" for arg in parsed.args])
    with pytest.raises(PayloadError) as info:
        accept(TOPICS, other, payload)
    assert info.value.code in ("unit_mismatch", "id_mismatch")


@budget(40)
@given(batch(st.tuples(TOPIC, st.binary(max_size=200) | json_values.map(dumps)), 10))
def test_intake_never_raises_anything_but_a_payload_error(
    messages: list[tuple[str, bytes]],
) -> None:
    for topic, payload in messages:
        try:
            item = accept(TOPICS, topic, payload)
        except PayloadError as exc:
            assert exc.code, exc  # noqa: PT017 (one of a batch)
            assert exc.reason, exc  # noqa: PT017
            continue
        assert item is None or item.raw == payload.decode()


@budget(25)
@given(st.data())
def test_intake_of_mutated_payloads(data: st.DataObject) -> None:
    model_type = data.draw(st.sampled_from(ARCHIVED))
    payload, mutation = data.draw(mutations(model_type))
    topic = own_topic(decode(model_type, dumps(payload)))
    try:
        item = accept(TOPICS, topic, apply(payload, mutation))
    except PayloadError as exc:
        refused = exc
    else:
        assert isinstance(item, Item)
        return
    assert refused.code
    assert refused.reason


@st.composite
def log_batches(draw: st.DrawFn) -> LogBatch:
    """A run of consecutive records of an edge log, hashed as the log hashes them."""
    first = draw(st.integers(1, 10**6))
    gap = draw(st.integers(0, 5))  # retention may have removed rows before it
    prev_seq, prev_hash = max(0, first - 1 - gap), draw(st.sampled_from([GENESIS, "ab" * 32]))
    records = []
    for seq in range(first, first + draw(st.integers(1, 4))):
        at_ns = draw(st.integers(0, 2**63 - 1))
        kind = draw(st.text(min_size=1, max_size=12))
        activation_id = draw(st.none() | st.text(max_size=12))
        body = draw(st.text(max_size=60))
        digest = record_hash(
            prev_hash, seq, at_ns, kind=kind, activation_id=activation_id, body=body
        )
        records.append(
            LogBatchRecord(
                seq=seq,
                prev_seq=prev_seq,
                at_ns=at_ns,
                kind=kind,
                activation_id=activation_id,
                body=body,
                prev_hash=prev_hash,
                hash=digest,
            )
        )
        prev_seq, prev_hash = seq, digest
    return LogBatch(log_id="log-1", head_seq=prev_seq, sent_at_ns=1, records=tuple(records))


TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=60)


@budget(55)
@given(log_batches(), st.data())
def test_a_log_batch_is_stored_whole_or_refused_at_the_record_changed(
    batch_: LogBatch, data: st.DataObject
) -> None:
    topic = TOPICS.log_records(batch_.log_id, batch_.gateway_id)
    item = accept(TOPICS, topic, encode(batch_))
    assert isinstance(item, Item)
    assert item.model == batch_
    # Change one column of one record: the batch is refused, naming that record.
    i = data.draw(st.integers(0, len(batch_.records) - 1))
    record = batch_.records[i]
    column = data.draw(st.sampled_from(["body", "kind", "at_ns", "prev_seq", "hash"]))
    new: Any = {
        "body": data.draw(TEXT.filter(lambda b: b != record.body)),
        "kind": data.draw(st.text(min_size=1, max_size=12).filter(lambda k: k != record.kind)),
        "at_ns": record.at_ns ^ (1 << data.draw(st.integers(0, 62))),
        "prev_seq": data.draw(st.integers(0, 10**7).filter(lambda s: s != record.prev_seq)),
        "hash": "f" * 64 if record.hash != "f" * 64 else "e" * 64,
    }[column]
    changed = record.model_copy(update={column: new})
    records = (*batch_.records[:i], changed, *batch_.records[i + 1 :])
    tampered = batch_.model_copy(update={"records": records})
    if column == "prev_seq" and i == 0 and new < record.seq:
        # Not covered by the hash, and nothing before it in the batch to contradict it.
        assert isinstance(accept(TOPICS, topic, encode(tampered)), Item)
        return
    with pytest.raises(PayloadError) as info:
        accept(TOPICS, topic, encode(tampered))
    assert info.value.code in ("bad_hash", "not_consecutive"), info.value
    assert f"record {record.seq}" in info.value.reason


# --- the activation watcher (dispatch's view, `trigger-mesh tail`) ------------------------------
RECORD_LIMIT = 16 * 1024 * 1024  # what the watcher and the console allow an activation record


def _limit(model_type: type[Any]) -> dict[str, int]:
    return {"max_bytes": RECORD_LIMIT} if model_type is ActivationRecord else {}


def _message_streams(models: list[type[Any]], topic_of: Callable[[Any], str]) -> Any:
    """Lists of (model type, topic, payload, decoded model or None): valid payloads,
    mutated ones and garbage, each on the topic its model travels on."""

    @st.composite
    def one(draw: st.DrawFn) -> tuple[type[Any], str, bytes, Any]:
        model_type = draw(st.sampled_from(models))
        how = draw(st.sampled_from(["valid", "mutated", "garbage"]))
        if how == "mutated":
            payload, mutation = draw(mutations(model_type))
            raw = apply(payload, mutation)
        else:
            payload = draw(instances(model_type))
            raw = dumps(payload)
        if how == "garbage":
            raw = draw(st.binary(max_size=80) | json_values.map(dumps))
        topic = topic_of(decode(model_type, dumps(payload)))
        try:
            decoded = decode(model_type, raw, **_limit(model_type))
        except PayloadError:
            decoded = None
        return model_type, topic, raw, decoded

    return st.lists(one(), min_size=1, max_size=8)


def _watch_topic(model: Any) -> str:
    if isinstance(model, ActivationRecord):
        return TOPICS.activation(model.unit_id, model.activation_id)
    return TOPICS.receipt(model.unit_id)


@budget(20)
@given(_message_streams([ActivationRecord, TriggerReceipt], _watch_topic))
def test_the_watcher_keeps_the_latest_final_records_and_counts_the_rest(
    stream: list[tuple[type[Any], str, bytes, Any]],
) -> None:
    watcher = ActivationWatcher(URL, TOPICS, client_id="fuzz")
    records: dict[str, ActivationRecord] = {}
    receipts: dict[str, TriggerReceipt] = {}
    rejected = 0
    for _, topic, raw, decoded in stream:
        watcher._on_message(Inbound(topic, raw, retain=False))
        if decoded is None:
            rejected += 1
        elif isinstance(decoded, ActivationRecord):
            current = records.get(decoded.activation_id)
            if (
                current is None
                or current.state is ActivationState.PENDING
                or decoded.state is ActivationState.CANCELLED
            ):
                records[decoded.activation_id] = decoded
        else:
            receipts[decoded.event_id] = decoded
    assert watcher.records == records
    assert watcher.receipts == receipts
    assert sum(n for k, n in watcher.counters.items() if k.startswith("rejected.")) == rejected


# --- the dispatch console ---------------------------------------------------------------------
def _console_topic(model: Any) -> str:
    if isinstance(model, ActivationRecord):
        return TOPICS.activation(model.unit_id, model.activation_id)
    if isinstance(model, CameraPresence):
        return TOPICS.presence(model.camera_id)
    if isinstance(model, Escalation):
        return TOPICS.escalation(model.audience)
    if isinstance(model, GatewayStatus):
        return TOPICS.gateway(model.gateway_id)
    return TOPICS.receipt(model.unit_id)


CONSOLE = [ActivationRecord, CameraPresence, Escalation, GatewayStatus, TriggerReceipt]


@budget(20)
@given(_message_streams(CONSOLE, _console_topic), batch(TOPIC, 3))
def test_the_console_survives_anything_and_pages_get_plain_json(
    stream: list[tuple[type[Any], str, bytes, Any]], stray_topics: list[str]
) -> None:
    hub = ConsoleHub(URL, TOPICS, client_id="fuzz")
    page = hub.attach()
    rejected = 0
    for model_type, topic, raw, decoded in stream:
        hub._on_message(Inbound(topic, raw, retain=False))
        # An empty retained presence removes the camera: not a rejection.
        removed = model_type is CameraPresence and raw == b""
        rejected += decoded is None and not removed
    for topic in stray_topics:
        hub._on_message(Inbound(topic, b"\xff", retain=False))
        parsed = TOPICS.parse(topic)
        rejected += parsed is not None and parsed.kind in (
            TopicKind.ACTIVATION,
            TopicKind.PRESENCE,
            TopicKind.ESCALATION,
            TopicKind.GATEWAY,
            TopicKind.RECEIPT,
        )
    assert sum(n for k, n in hub.counters.items() if k.startswith("rejected.")) == rejected
    # What the pages are sent is JSON a browser parses: no NaN, no Infinity.
    while not page.empty():
        json.dumps(page.get_nowait(), allow_nan=False)
    json.dumps(hub.state.snapshot(), allow_nan=False)


# --- the log sync's watermark -----------------------------------------------------------------
@pytest.fixture(scope="module")
def sync(tmp_path_factory: pytest.TempPathFactory) -> LogSync:
    path = tmp_path_factory.mktemp("sync") / "log.db"
    ActivationLog(path).close()
    return LogSync(path, url=URL, topics=TOPICS)


SYNCED = st.fixed_dictionaries(
    {
        "type": st.just("log_synced"),
        "v": st.just(2),
        "own": st.booleans(),  # replaced by log_id: this log's, or another's
        "synced_seq": st.integers(-5, 2**64),
        "archiver": st.sampled_from(["arch-1", "a/b", ""]),
        # A time: decimal text (v2); now and then a number, which v2 refuses.
        "at_ns": st.one_of(st.integers(-1, 2**63).map(str), st.integers(0, 5)),
    }
)


@budget(40)
@given(batch(st.one_of(SYNCED, json_values, st.binary(max_size=40)), 12))
def test_the_watermark_only_moves_forward_on_valid_announcements_of_this_log(
    sync: LogSync, messages: list[Any]
) -> None:
    sync.watermark, sync.counters = 0, Counter()
    expected, refused = 0, 0
    for message in messages:
        valid = False
        if isinstance(message, dict) and "own" in message and message.get("v") == 2:
            own = message.pop("own")
            message["log_id"] = sync.log_id if own else "another-log"
            at = message["at_ns"]
            valid = (
                own
                and 0 <= message["synced_seq"] < 2**53  # within what a double holds exactly
                # TimeNs: decimal text of what SQLite and PostgreSQL hold
                and isinstance(at, str)
                and at.isdigit()
                and (at == "0" or not at.startswith("0"))
                and int(at) < 2**63
                and message["archiver"] == "arch-1"
            )
        raw = message if isinstance(message, bytes) else dumps(message)
        sync._on_message(Inbound(TOPICS.log_synced(sync.log_id, None), raw, retain=True))
        if not raw:
            continue  # a cleared retained message
        if valid:
            expected = max(expected, message["synced_seq"])
        else:
            refused += 1
    assert sync.watermark == expected
    assert sum(n for k, n in sync.counters.items() if k.startswith("rejected.")) == refused


# --- findings, each pinned by an explicit example ---------------------------------------------
def test_sequence_numbers_past_64_bits_are_refused_at_intake() -> None:
    """Finding: a log batch with a seq (or time) past 64 bits was accepted by the intake and
    refused only by PostgreSQL's bigint, after its whole write group had failed once.
    (v2 bounds sequence numbers at 2^53 - 1, where a double stops being exact.)"""
    body = "{}"
    big = 2**53
    digest = record_hash(GENESIS, big, 0, kind="ack", activation_id=None, body=body)
    batch_ = {
        "type": "log_batch",
        "v": 2,
        "log_id": "log-1",
        "head_seq": big,
        "sent_at_ns": "1",
        "records": [
            {
                "seq": big,
                "prev_seq": 0,
                "at_ns": "0",
                "kind": "ack",
                "body": body,
                "prev_hash": GENESIS,
                "hash": digest,
            }
        ],
    }
    with pytest.raises(PayloadError) as info:
        accept(TOPICS, TOPICS.log_records("log-1", None), json.dumps(batch_).encode())
    assert info.value.reason.startswith("field 'head_seq': Input should be less than")
    synced = {"type": "log_synced", "v": 2, "log_id": "l", "synced_seq": big}
    synced |= {"archiver": "a", "at_ns": "1"}
    with pytest.raises(PayloadError, match="field 'synced_seq'"):
        decode(LogSynced, json.dumps(synced).encode())
