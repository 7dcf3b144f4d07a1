"""The watcher keeps the receipt that decided a trigger, not one for a repeat of it."""

from __future__ import annotations

import pytest

from bridge.mqtt.client import Inbound
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.dispatch.watch import ActivationWatcher
from mesh.protocol.codec import encode
from mesh.protocol.models import ReceiptOutcome, TriggerReceipt

NOW = 1_790_000_000_000_000_000


@pytest.mark.parametrize("accepted_first", [True, False])
def test_a_repeat_of_the_trigger_does_not_replace_its_receipt(accepted_first: bool) -> None:
    """A NATS central echoes the car's trigger back into the car (docs/broker.md): the
    gateway answers the copy `suppressed`, before or after the original's receipt."""
    topics = Topics()
    watcher = ActivationWatcher(BrokerUrl.parse("mqtt://127.0.0.1:1"), topics, client_id="w")
    accepted = TriggerReceipt(
        event_id="ev-1",
        unit_id="car-1",
        outcome=ReceiptOutcome.ACCEPTED,
        activation_id="a-1",
        at_ns=NOW,
    )
    repeat = accepted.model_copy(
        update={
            "outcome": ReceiptOutcome.SUPPRESSED,
            "reason": "duplicate delivery of the same trigger event",
            "at_ns": NOW + 40_000_000,
        }
    )
    for receipt in (accepted, repeat) if accepted_first else (repeat, accepted):
        watcher._on_message(Inbound(topics.receipt("car-1"), encode(receipt), retain=False))
    assert watcher.receipts["ev-1"].outcome is ReceiptOutcome.ACCEPTED
