"""A private broker for one process: mosquitto if installed, otherwise amqtt in-process.

``broker: embedded`` (the default everywhere) means "start one of these on a free
loopback port". mosquitto is preferred: it speaks MQTT 5, and we generate its config
with TCP_NODELAY. amqtt is the pure-Python fallback for machines without mosquitto; it
speaks 3.1.1 only, which MqttLink detects and follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NoReturn

import structlog

from bridge.mqtt.mosquitto_conf import render_local_config
from bridge.mqtt.urls import BrokerUrl

BrokerKind = Literal["mosquitto", "amqtt"]
Preference = Literal["auto", "mosquitto", "amqtt"]
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class BrokerStartError(RuntimeError):
    pass


def find_mosquitto() -> str | None:
    """The mosquitto binary: on PATH, or in the sbin directories Debian installs it to."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = Path(directory) / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


# Ports are chosen below the kernel's ephemeral range: a client retrying a stopped local
# broker's port in that range can be given that very port as its own source port and
# connect to itself (TCP self-connect), and the broker cannot listen there again
# (test_sync_retries_until_the_broker_comes_back: "Address already in use", and paho read
# its own CONNECT back).
_PORT_LOW = 10_000
_PORT_TRIES = 200


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _bound_below_ephemeral(host: str) -> socket.socket:
    """A socket bound to a free port between _PORT_LOW and the ephemeral range."""
    high = _ephemeral_low()
    if high - _PORT_LOW < 1_000:  # an ephemeral range set low: the kernel's choice, then
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((host, 0))
        return sock
    for _ in range(_PORT_TRIES):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((host, random.randrange(_PORT_LOW, high)))
        except OSError:
            sock.close()
            continue
        return sock
    raise OSError(f"no free port on {host} in {_PORT_LOW}..{high - 1} after {_PORT_TRIES} tries")


def free_port(host: str = "127.0.0.1") -> int:
    with _bound_below_ephemeral(host) as sock:
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different free ports: each is held until all are chosen (free_port called
    twice in a row may return the same port, once the first probe is closed)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(_bound_below_ephemeral(host))
            ports.append(int(sock.getsockname()[1]))
        return ports


class MosquittoProcess:
    """A mosquitto child process on a loopback port with a generated (or a given) config
    (synchronous: usable from test fixtures as well as, through a thread, from EmbeddedBroker)."""

    def __init__(
        self,
        binary: str,
        port: int,
        workdir: Path,
        *,
        persistent: bool = False,
        config: Path | None = None,
    ) -> None:
        """``config``: run with this mosquitto.conf as it is (it must listen on ``port``,
        which is where readiness is checked); otherwise one is generated in ``workdir``."""
        self.binary = binary
        self.port = port
        self.workdir = workdir
        self.persistent = persistent
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> BrokerUrl:
        return BrokerUrl(scheme="mqtt", host="127.0.0.1", port=self.port)

    @property
    def log_file(self) -> Path:
        if self.config is not None:
            return _log_file_of(self.config) or self.workdir / "mosquitto.log"
        return self.workdir / "mosquitto.log"

    def start(self, timeout_s: float = 10.0) -> None:
        conf = self.config if self.config is not None else self._write_config()
        self.process = subprocess.Popen(  # noqa: S603 - our own binary and generated config
            [self.binary, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f"mosquitto exited with status {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        self._fail(f"mosquitto did not listen on 127.0.0.1:{self.port} within {timeout_s} s")

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        persistence = self.workdir / "data" if self.persistent else None
        if persistence is not None:
            persistence.mkdir(exist_ok=True)
        conf.write_text(
            render_local_config(
                self.port,
                persistence_dir=persistence,
                log_file=self.log_file,
                user=getpass.getuser() if os.geteuid() == 0 else None,
            )
        )
        return conf

    def _fail(self, message: str) -> NoReturn:
        process, self.process = self.process, None
        stderr = ""
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait()
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        detail = self.log_file.read_text() if self.log_file.exists() else ""
        raise BrokerStartError(f"{message}; mosquitto said: {(stderr + detail).strip()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no wills sent, nothing saved."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()
            if process.stderr is not None:
                process.stderr.close()


def _log_file_of(config: Path) -> Path | None:
    """The file a mosquitto.conf logs to (``log_dest file PATH``), to quote when it fails."""
    try:
        lines = config.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        words = line.split(maxsplit=2)
        if len(words) == 3 and words[:2] == ["log_dest", "file"]:
            return Path(words[2])
    return None


class EmbeddedBroker:
    """Start with ``async with EmbeddedBroker() as broker: broker.url``."""

    def __init__(
        self,
        *,
        prefer: Preference = "auto",
        port: int | None = None,
        workdir: Path | None = None,
        persistent: bool = False,
    ) -> None:
        self.prefer = prefer
        self.port = port
        self._persistent = persistent
        self._workdir = workdir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._mosquitto: MosquittoProcess | None = None
        self._amqtt: Any = None
        self.kind: BrokerKind | None = None
        self._log = structlog.get_logger("bridge.embedded")

    @property
    def protocol(self) -> str:
        """The MQTT version to speak to it: amqtt knows 3.1.1 only, so skip the MQTT 5 probe."""
        return "3.1.1" if self.kind == "amqtt" else "auto"

    @property
    def url(self) -> BrokerUrl:
        if self.port is None or self.kind is None:
            raise BrokerStartError("embedded broker is not running")
        return BrokerUrl(scheme="mqtt", host="127.0.0.1", port=self.port)

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> BrokerUrl:
        binary = find_mosquitto()
        if self.prefer == "mosquitto" and binary is None:
            raise BrokerStartError("mosquitto is not installed (apt-get install -y mosquitto)")
        if self.port is None:
            self.port = free_port()
        if binary is not None and self.prefer != "amqtt":
            self._mosquitto = MosquittoProcess(
                binary, self.port, self._dir(), persistent=self._persistent
            )
            await asyncio.to_thread(self._mosquitto.start)
            self.kind = "mosquitto"
        else:
            await self._start_amqtt()
            self.kind = "amqtt"
        self._log.debug("embedded broker up", kind=self.kind, port=self.port)
        return self.url

    async def stop(self) -> None:
        if self._mosquitto is not None:
            await asyncio.to_thread(self._mosquitto.stop)
            self._mosquitto = None
        if self._amqtt is not None:
            broker, self._amqtt = self._amqtt, None
            with contextlib.suppress(Exception):
                await broker.shutdown()
        self.kind = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _dir(self) -> Path:
        if self._workdir is not None:
            return self._workdir
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="trigger-mesh-broker-")
        return Path(self._tmp.name)

    async def _start_amqtt(self) -> None:
        from amqtt.broker import Broker  # imported only when needed: it is heavy

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.ERROR)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        broker = Broker(config)
        await broker.start()
        self._amqtt = broker
