"""Turn a gateway's ``can:`` config into a running source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import can
import cantools

from triggers.can.engine import RuleEngine
from triggers.can.rules import RulesError, load_rules
from triggers.can.settings import CanConfig
from triggers.can.source import BusFactory, CanTriggerSource


def _relative(config_path: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else config_path.parent / path


def load_databases(paths: list[Path]) -> list[Any]:
    databases = []
    for path in paths:
        try:
            databases.append(cantools.database.load_file(str(path)))
        except (OSError, cantools.database.errors.Error) as exc:
            raise RulesError(path, "", f"cannot load DBC: {exc}") from None
    return databases


def build_engine(rules_path: Path, dbc_paths: list[Path]) -> RuleEngine:
    return RuleEngine.compile(load_rules(rules_path), load_databases(dbc_paths), str(rules_path))


def bus_factory(config: CanConfig) -> BusFactory:
    def make(filters: list[dict[str, Any]]) -> can.BusABC:
        kwargs: dict[str, Any] = dict(config.options)
        if config.bitrate is not None:
            kwargs["bitrate"] = config.bitrate
        return can.Bus(
            interface=config.interface, channel=config.channel, can_filters=filters, **kwargs
        )

    return make


def build_source(config: CanConfig, config_path: Path, unit_id: str) -> CanTriggerSource:
    engine = build_engine(
        _relative(config_path, config.rules), [_relative(config_path, p) for p in config.dbc]
    )
    return CanTriggerSource(
        engine,
        unit_id=unit_id,
        bus_factory=bus_factory(config),
        channel=f"{config.interface}:{config.channel}",
        tick_s=config.tick_s,
    )
