"""The systemd notify protocol against a real unix datagram socket standing in for systemd:
READY, STATUS, periodic WATCHDOG pings from the event loop, and no pings while the loop is
blocked or the log writer does not answer; then STOPPING."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.decide.policy import Policy
from mesh.gateway.build import Overrides, build_gateway, config_in_code
from mesh.ops.sd_notify import SystemdNotifier, watchdog_loop
from tests.harness import UNIT, wait_until


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET: every datagram, with when it arrived."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bind_to)
        self.sock.settimeout(0.05)
        self.got: list[tuple[float, str]] = []
        self._stop = threading.Event()
        # A thread, not the loop: it must keep receiving while the test blocks the loop.
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.got.append((time.monotonic(), data.decode()))

    def messages(self) -> list[str]:
        return [m for _, m in self.got]

    def pings(self) -> list[float]:
        return [t for t, m in self.got if m == "WATCHDOG=1"]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    fake = FakeSystemd(f"@trigger-mesh-test-{uuid.uuid4().hex}")
    yield fake
    fake.close()


def test_messages_arrive_as_systemd_expects(systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier(systemd.address)
    assert notifier.ready("serving; 0 activation(s) in progress")
    assert notifier.status("degraded; broker link is down")
    assert notifier.watchdog()
    assert notifier.stopping("stopping")
    notifier.close()
    deadline = time.monotonic() + 5
    while len(systemd.got) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert systemd.messages() == [
        "READY=1\nSTATUS=serving; 0 activation(s) in progress",
        "STATUS=degraded; broker link is down",
        "WATCHDOG=1",
        "STOPPING=1\nSTATUS=stopping",
    ]


def test_a_socket_path_in_the_file_system_works_too() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:  # short: sun_path is 108 bytes
        fake = FakeSystemd(str(Path(folder) / "notify"))
        try:
            assert SystemdNotifier(fake.address).ready()
            deadline = time.monotonic() + 5
            while not fake.got and time.monotonic() < deadline:
                time.sleep(0.01)
            assert fake.messages() == ["READY=1"]
        finally:
            fake.close()


def test_without_systemd_nothing_is_sent_and_nothing_fails() -> None:
    notifier = SystemdNotifier.from_env({})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    assert not notifier.ready()
    gone = SystemdNotifier(f"@trigger-mesh-nobody-{uuid.uuid4().hex}")
    assert not gone.watchdog()  # nobody listening: logged, not raised


def test_the_watchdog_interval_comes_from_the_environment() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000"}
    assert SystemdNotifier.from_env(env).watchdog_interval_s == 15.0
    mine = {**env, "WATCHDOG_PID": str(os.getpid())}
    assert SystemdNotifier.from_env(mine).watchdog_interval_s == 15.0
    # Meant for another process of the unit, or malformed: no watchdog here.
    assert SystemdNotifier.from_env({**env, "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    assert SystemdNotifier.from_env({**env, "WATCHDOG_USEC": "soon"}).watchdog_interval_s is None
    assert SystemdNotifier.from_env({"WATCHDOG_USEC": "30000000"}).watchdog_interval_s is None


async def healthy(timeout_s: float) -> str | None:
    return None


async def test_pings_are_periodic_and_stop_while_the_loop_is_blocked(
    systemd: FakeSystemd,
) -> None:
    notifier = SystemdNotifier(systemd.address, watchdog_usec=100_000)  # a ping every 50 ms
    task = asyncio.create_task(watchdog_loop(notifier, healthy))
    try:
        await wait_until(lambda: len(systemd.pings()) >= 5, 5)
        blocked_at = time.monotonic()
        time.sleep(0.6)  # a handler that blocks the event loop (the bug the watchdog catches)
        unblocked_at = time.monotonic()
        count = len(systemd.pings())
        await wait_until(lambda: len(systemd.pings()) >= count + 3, 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    pings = systemd.pings()
    during = [t for t in pings if blocked_at + 0.05 < t < unblocked_at]
    assert during == []
    assert any(t >= unblocked_at for t in pings)  # and they resume with the loop
    before = [t for t in pings if t < blocked_at]
    gaps = [b - a for a, b in itertools.pairwise(before)]
    assert max(gaps) < 0.3  # periodic: roughly every 50 ms while the loop runs


async def test_a_failing_probe_feeds_no_watchdog_and_says_why(systemd: FakeSystemd) -> None:
    problems: list[str | None] = [None, "activation log cannot be written: disk I/O error"]

    async def probe(timeout_s: float) -> str | None:
        return problems[0]

    async def slow(timeout_s: float) -> str | None:
        await asyncio.sleep(timeout_s * 4)
        return None

    notifier = SystemdNotifier(systemd.address, watchdog_usec=100_000)
    task = asyncio.create_task(watchdog_loop(notifier, probe, lambda: "ok"))
    try:
        await wait_until(lambda: len(systemd.pings()) >= 2, 5)
        problems.pop(0)
        await wait_until(
            lambda: (
                "STATUS=unhealthy: activation log cannot be written: disk I/O error"
                in systemd.messages()
            ),
            5,
        )
        count = len(systemd.pings())
        await asyncio.sleep(0.3)
        assert len(systemd.pings()) == count
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # A probe that hangs is a failed probe.
    task = asyncio.create_task(watchdog_loop(notifier, slow))
    try:
        await wait_until(
            lambda: any("health probe took longer" in m for m in systemd.messages()), 5
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert systemd.messages().count("STATUS=ok") == 1  # a status line is sent when it changes


async def test_a_gateway_whose_log_writer_is_stuck_stops_feeding_the_watchdog(
    mosquitto: MosquittoProcess,
    topics: Topics,
    tmp_path: Path,
    systemd: FakeSystemd,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.address)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 200 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    log_path = tmp_path / "log.db"
    gw = build_gateway(
        config_in_code(UNIT, log_path, topics=topics),
        Policy(),
        url=mosquitto.url,
        overrides=Overrides(systemd_notify=True),
        client_id=f"gw-{uuid.uuid4().hex[:8]}",
    )
    task = asyncio.create_task(gw.run())
    try:
        await wait_until(lambda: any(m.startswith("READY=1") for m in systemd.messages()), 10)
        await wait_until(lambda: len(systemd.pings()) >= 3, 10)
        # Another process holds the log's write lock (say, a sqlite3 shell left in a
        # transaction): the writer waits in BEGIN, so the probe's flush does not return.
        blocker = sqlite3.connect(log_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            await asyncio.sleep(0.3)  # a ping may have been on its way
            count = len(systemd.pings())
            await wait_until(
                lambda: any("log writer did not answer" in m for m in systemd.messages()), 5
            )
            await asyncio.sleep(1.0)
            assert len(systemd.pings()) == count
        finally:
            blocker.execute("ROLLBACK")  # within SQLite's 5 s busy wait: the writer goes on
            blocker.close()
        await wait_until(lambda: len(systemd.pings()) >= count + 2, 5)
        assert gw.log.write_error is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert systemd.messages()[-1].startswith("STOPPING=1")


async def test_a_real_gateway_process_is_ready_feeds_the_watchdog_and_says_stopping(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, systemd: FakeSystemd
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"unit: {UNIT}\nbroker: {mosquitto.url}\ntopic_prefix: {topics.prefix}\n"
        f"log: {tmp_path / 'log.db'}\naudit:\n  retention_days: null\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_PID", "LISTEN_PID")}
    env.update(NOTIFY_SOCKET=systemd.address, WATCHDOG_USEC="300000", PYTHONUNBUFFERED="1")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mesh",
        "gateway",
        "--config",
        str(config),
        "--log-format",
        "json",
        "--metrics-port",
        "0",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_until(lambda: any(m.startswith("READY=1") for m in systemd.messages()), 20)
        await wait_until(lambda: len(systemd.pings()) >= 4, 10)
        # Ready does not wait for the broker (the log works without it); the status follows.
        await wait_until(lambda: "STATUS=ok; 0 activation(s) in progress" in systemd.messages())
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    messages = systemd.messages()
    ready = next(i for i, m in enumerate(messages) if m.startswith("READY=1"))
    first_ping = messages.index("WATCHDOG=1")
    assert ready < first_ping  # never a ping before it said it was ready
    assert "0 activation(s) in progress" in messages[ready]
    assert messages[-1].startswith("STOPPING=1"), (messages[-3:], stderr.decode()[-2000:])
    assert process.returncode == 0, stderr.decode()[-2000:]
