"""Deeply nested JSON (review finding, issue 17): Python's json.loads raises RecursionError
at about 1,000 levels, which no reader expected. On a camera's own topic it escaped from the
link's intake (which runs inside the MQTT client's socket reader), dropped the connection
and left the message unacknowledged, so the persistent session delivered it again at every
reconnect: one 1 KB message, no key, a camera deaf on its own topic. Each reader now refuses
it as bad input, and a link's intake that fails on a message drops and acknowledges it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.mqtt.client import _BoundedInbox
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.camera.agent import CameraAgent, CameraIdentity
from mesh.camera.intake import claimed_issuer
from mesh.gateway.daemon import _peek_activation_id
from mesh.protocol.codec import PayloadError
from mesh.protocol.jws import b64url, parse
from mesh.protocol.models import CameraRole, RecordStart
from mesh.security.checks import Security, signed_envelope
from mesh.security.trust import TrustStore

DEEP = 1000
NESTED = b'{"signature":' + b"[" * DEEP + b"]" * DEEP + b"}"
NESTED_PLAIN = b'{"issuer":' + b"[" * DEEP + b"]" * DEEP + b"}"
NESTED_HEADER = json.dumps(
    {"protected": b64url(b"[" * DEEP + b"]" * DEEP), "payload": "e30", "signature": "A" * 86}
).encode()


def test_python_s_own_parser_would_have_raised() -> None:
    with pytest.raises(RecursionError):
        json.loads(NESTED)


@pytest.mark.parametrize("message", [NESTED, NESTED_PLAIN, NESTED_HEADER])
def test_every_reader_refuses_it_as_bad_input(message: bytes) -> None:
    assert claimed_issuer(message) is None
    assert _peek_activation_id(message) is None
    if message is NESTED_HEADER:
        with pytest.raises(PayloadError, match="bad_jws"):
            signed_envelope(message)
    else:
        assert signed_envelope(message) is None
    with pytest.raises(PayloadError) as refused:
        Security().open(RecordStart, message)
    assert refused.value.code in ("not_json", "bad_jws")
    with pytest.raises(PayloadError):
        parse(message)


def test_the_camera_s_own_topic_intake_takes_it_without_raising() -> None:
    camera = CameraAgent(
        CameraIdentity("bwc-1", "car-1", CameraRole.BODY),
        url=BrokerUrl.parse("mqtt://127.0.0.1:1"),
        topics=Topics("t/mesh/v2"),
        position=None,
        security=Security(trust=TrustStore([])),
    )
    for message in (NESTED, NESTED_PLAIN, NESTED_HEADER):
        camera._take_own("t/mesh/v2/cmd/camera/bwc-1", message)  # does not raise


class _Message:
    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.topic = type("T", (), {"value": "t/x"})()


def test_a_link_intake_that_fails_drops_and_acknowledges_the_message() -> None:
    acked: list[Any] = []

    def taker(topic: str, payload: bytes) -> None:
        raise RecursionError("a filter that fails")

    inbox = _BoundedInbox(0, on_drop=lambda m: None, take=(taker, acked.append))
    message = _Message(b"[]")
    inbox._put(message)  # type: ignore[arg-type]
    assert acked == [message]
    assert inbox.filter_failures == 1

    dropped: list[Any] = []

    def admit(topic: str, payload: bytes) -> bool:
        raise ValueError("an admission check that fails")

    gate = _BoundedInbox(0, on_drop=dropped.append, admit=admit)
    gate._put(message)  # type: ignore[arg-type]
    assert dropped == [message]
    assert gate.filter_failures == 1


def test_an_envelope_spelling_signature_with_an_escape_is_still_a_jws() -> None:
    """JSON may write the member name as "\\u0073ignature"; the envelope test must not
    take such a message for a plain payload (review finding, low)."""
    genuine = json.loads(
        b'{"protected":"eyJhbGciOiJFZERTQSIsImtpZCI6IjRlYmJlODU5ZGU3MjhlNTIiLCJ0eXAiOiJ0'
        b'cmlnZ2VyLW1lc2granNvbiJ9","payload":"e30","signature":"' + b"A" * 86 + b'"}'
    )
    escaped = json.dumps(genuine).replace('"signature"', '"\\u0073ignature"').encode()
    assert b'"signature"' not in escaped
    envelope = signed_envelope(escaped)
    assert envelope is not None
    assert envelope.kid == "4ebbe859de728e52"
    with pytest.raises(PayloadError) as refused:
        Security(trust=TrustStore([])).open(RecordStart, escaped)
    assert refused.value.code == "unknown_key"  # verified as a JWS, not read as plain


def test_the_archive_refuses_an_oversized_ack_before_parsing_it() -> None:
    from mesh.archive.intake import MAX_SMALL_PAYLOAD, accept

    topics = Topics("t/mesh/v2")
    huge = b'{"signature":"' + b"A" * (MAX_SMALL_PAYLOAD * 2) + b'"}'
    with pytest.raises(PayloadError) as refused:
        accept(topics, topics.ack("gw-1", "bwc-1"), huge)
    assert refused.value.code == "too_large"
