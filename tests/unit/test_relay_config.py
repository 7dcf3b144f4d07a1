"""``relay:`` in gateway.yaml (docs/config.md): checked where it is read, turned into the
daemon's RelaySettings by mesh/gateway/build.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mesh.config import GatewayConfig
from mesh.decide.policy import Policy
from mesh.gateway.build import gateway_settings
from mesh.security.checks import Security


def test_relay_settings_from_the_config(tmp_path: Path) -> None:
    cfg = GatewayConfig.model_validate(
        {
            "unit": "car-12",
            "log": str(tmp_path / "log.db"),
            "relay": {"url": "mqtt://central.example:1883", "max_cells": 16, "hold_s": 5},
        }
    )
    relay = gateway_settings(cfg, Policy(), signer=None, security=Security()).relay
    assert relay is not None
    assert (relay.url.host, relay.url.port) == ("central.example", 1883)
    assert (relay.limits.max_cells, relay.limits.hold_s, relay.limits.margin_m) == (16, 5, 500)
    off = GatewayConfig.model_validate({"unit": "car-12"})
    assert gateway_settings(off, Policy(), signer=None, security=Security()).relay is None


@pytest.mark.parametrize(
    ("relay", "where"),
    [
        ({"url": "ftp://central"}, "relay.url"),
        ({"url": "mqtt://c", "max_cells": 0}, "relay.max_cells"),
        ({"url": "mqtt://c", "margin_m": 9000}, "relay.margin_m"),
        ({"url": "mqtt://c", "cells": 3}, "relay.cells"),
        ({}, "relay.url"),
    ],
)
def test_a_bad_relay_is_named(relay: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        GatewayConfig.model_validate({"unit": "car-12", "relay": relay})
    locations = [".".join(str(p) for p in e["loc"]) for e in caught.value.errors()]
    assert where in locations, locations
