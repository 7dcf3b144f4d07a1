"""Shared fixtures: a real mosquitto per test session, a private topic prefix per test.

Under CI=true a test that needs mosquitto or Chromium fails when it is missing; elsewhere it
skips.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.embedded import MosquittoProcess, find_mosquitto, free_port
from bridge.topics import Topics
from mesh import logs

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_mosquitto() -> str:
    binary = find_mosquitto()
    if binary is None:
        message = "mosquitto is not installed (apt-get install -y mosquitto)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture(scope="session", autouse=True)
def _quiet_logs() -> None:
    logs.configure("console", "warning")


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoProcess]:
    """One mosquitto for the session, on a free loopback port, with TCP_NODELAY."""
    broker = MosquittoProcess(require_mosquitto(), free_port(), tmp_path_factory.mktemp("mosq"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def own_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoProcess]:
    """A mosquitto for one test, which the test may stop, kill and restart."""
    broker = MosquittoProcess(require_mosquitto(), free_port(), tmp_path_factory.mktemp("mosq"))
    broker.start()
    yield broker
    broker.stop()


# Debian's Chromium, started as DEVELOPERS.md says; Playwright drives it (never its own download).
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of Debian's Chromium (apt-get install chromium)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium is not installed (apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


SHARED_CAN = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "can"


@pytest.fixture(scope="session")
def can_data() -> Path:
    """../shared/data/can: real DBC files and captures (CI has shared/ beside the checkout)."""
    if not (SHARED_CAN / "ford_cgea1_2_ptcan_2011.dbc").is_file():
        message = f"{SHARED_CAN} is missing (CI puts ../shared beside the checkout)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_CAN


@pytest.fixture
def topics() -> Topics:
    """A prefix no other test uses, so tests on the shared broker cannot see each other."""
    return Topics(f"test-{uuid.uuid4().hex[:10]}/mesh/v1")
