"""A broker that is there but will not have us, met by the one-shot commands (docs/cli.md,
"When the broker cannot be reached"): credentials it refuses, a certificate that does not
verify, TLS files that cannot be read. Each is a configuration problem: one line and
exit 2, decided from one MQTT CONNECT (or before connecting, for a file), never a retry
loop that ends in "cannot reach" (75).

A real mosquitto with password auth on a plain listener, a TLS one and a TLS one that also
wants a client certificate (a private CA made by
tests/tls_helpers.py; the password file written by bridge/broker/passwd.py, whose lines
mosquitto_passwd's match: tests/integration/test_broker_config.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.broker.passwd import password_line
from bridge.mqtt.client import LinkDown, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess, free_port
from bridge.mqtt.urls import BrokerUrl
from mesh.cli.errors import EXIT_USAGE
from mesh.journal.store import ActivationLog
from tests.conftest import require_mosquitto
from tests.integration.test_cli_broker_unreachable import ONE_SHOT, run
from tests.tls_helpers import TlsSet, make_tls

USER, PASSWORD = "alice", "a long enough secret"


@dataclasses.dataclass(frozen=True)
class AuthBroker:
    plain: BrokerUrl  # mqtt://alice:…@127.0.0.1:PORT
    tls: BrokerUrl  # mqtts://alice:…@127.0.0.1:PORT2?ca=…
    cert_required: BrokerUrl  # the same on a listener that requires a client certificate
    files: TlsSet
    log: Path


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthBroker]:
    binary = require_mosquitto()
    work = tmp_path_factory.mktemp("auth-broker")
    files = make_tls(work / "tls")
    (work / "passwd").write_text(password_line(USER, PASSWORD) + "\n")
    plain_port, tls_port, cert_port = free_port(), free_port(), free_port()
    log = work / "mosquitto.log"
    lines = [
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {work / 'passwd'}",
        # The TLS listener first: mosquitto opens them in this order, and start() waits for
        # the plain one, which is then the last to open.
        f"listener {tls_port} 127.0.0.1",
        f"cafile {files.ca}",
        f"certfile {files.cert}",
        f"keyfile {files.key}",
        # A listener that wants a client certificate of the CA as well.
        f"listener {cert_port} 127.0.0.1",
        f"cafile {files.ca}",
        f"certfile {files.cert}",
        f"keyfile {files.key}",
        "require_certificate true",
        f"listener {plain_port} 127.0.0.1",
        "persistence false",
        f"log_dest file {log}",
        "log_type all",
    ]
    if os.geteuid() == 0:  # as root mosquitto would drop to `mosquitto`, who cannot read these
        lines.append(f"user {getpass.getuser()}")
    conf = work / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    broker = MosquittoProcess(binary, plain_port, work, config=conf)
    broker.start()
    try:
        plain = BrokerUrl("mqtt", "127.0.0.1", plain_port, USER, PASSWORD)
        tls = BrokerUrl("mqtts", "127.0.0.1", tls_port, USER, PASSWORD, ca_file=str(files.ca))
        cert = dataclasses.replace(tls, port=cert_port)
        yield AuthBroker(plain, tls, cert, files, log)
    finally:
        broker.stop()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    ActivationLog(tmp_path / "act.db").close()  # an empty log: log sync reads it first
    return tmp_path


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one line a command printed on stderr, having exited with ``code``."""
    assert result.returncode == code, result.stderr
    assert result.stdout == "", result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- credentials the broker refuses: one CONNECT, exit 2 -------------------------------------
@pytest.mark.parametrize("command", list(ONE_SHOT))
def test_refused_credentials_are_one_line_and_exit_2(
    command: str, auth_broker: AuthBroker, work: Path
) -> None:
    wrong = dataclasses.replace(auth_broker.plain, password="not the password")
    started = time.monotonic()
    result = run(*ONE_SHOT[command], "--broker", wrong.as_text(), cwd=work)
    line = one_line(result, EXIT_USAGE)
    assert line == (
        f"error: the MQTT broker at mqtt://{USER}@127.0.0.1:{wrong.port} refused the "
        f"connection: user '{USER}': not authorized (CONNACK return code 5)"
    )
    assert time.monotonic() - started < 30  # decided, not retried until a timeout


def test_an_unknown_user_and_no_user_are_refused_too(auth_broker: AuthBroker, work: Path) -> None:
    ghost = dataclasses.replace(auth_broker.plain, username="ghost")
    line = one_line(run("tail", "--broker", ghost.as_text(), cwd=work), EXIT_USAGE)
    assert line.endswith(
        "refused the connection: user 'ghost': not authorized (CONNACK return code 5)"
    )
    anonymous = dataclasses.replace(auth_broker.plain, username=None, password=None)
    line = one_line(run("tail", "--broker", anonymous.as_text(), cwd=work), EXIT_USAGE)
    assert line == (
        f"error: the MQTT broker at mqtt://127.0.0.1:{anonymous.port} refused the connection: "
        "no user name in the broker URL: not authorized (CONNACK return code 5)"
    )


def test_the_right_credentials_get_through(auth_broker: AuthBroker, work: Path) -> None:
    for url in (auth_broker.plain, auth_broker.tls):
        result = run(
            "trigger", "--kind", "manual", "--unit", "car-1", "--no-wait", "--broker",
            url.as_text(), cwd=work,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "sent to unit car-1" in result.stdout


# --- TLS: refused credentials over TLS, a broker certificate that does not verify ----------
def test_over_tls_refused_credentials_are_exit_2(auth_broker: AuthBroker, work: Path) -> None:
    wrong = dataclasses.replace(auth_broker.tls, password="nope")
    line = one_line(
        run(
            "trigger", "--kind", "manual", "--unit", "car-1", "--broker", wrong.as_text(), cwd=work
        ),
        EXIT_USAGE,
    )
    assert line == (
        f"error: the MQTT broker at mqtts://{USER}@127.0.0.1:{wrong.port} refused the "
        f"connection: user '{USER}': not authorized (CONNACK return code 5)"
    )


def test_a_broker_certificate_from_another_ca_is_exit_2(
    auth_broker: AuthBroker, work: Path
) -> None:
    other = make_tls(work / "other")
    url = dataclasses.replace(auth_broker.tls, ca_file=str(other.ca))
    line = one_line(run("tail", "--broker", url.as_text(), cwd=work), EXIT_USAGE)
    assert line.startswith(
        f"error: the MQTT broker at mqtts://{USER}@127.0.0.1:{url.port} is not trusted: its "
        "certificate does not verify: "
    ), line


def test_a_broker_that_refuses_our_tls_is_exit_2(auth_broker: AuthBroker, work: Path) -> None:
    # No client certificate for a listener that requires one: TLS 1.3 says so in an alert
    # after the handshake, read where the CONNACK would be.
    url = auth_broker.cert_required
    line = one_line(run("tail", "--broker", url.as_text(), cwd=work), EXIT_USAGE)
    assert line == (
        f"error: the MQTT broker at mqtts://{USER}@127.0.0.1:{url.port} refused the "
        "connection: TLS failed: TLSV13_ALERT_CERTIFICATE_REQUIRED"
    )


# --- TLS files that cannot be used: exit 2 naming the file, before any connection ----------
@pytest.mark.parametrize("command", list(ONE_SHOT))
def test_a_missing_tls_file_is_named_before_connecting(command: str, work: Path) -> None:
    # Nothing listens on the port: a command that connected first would say so (75).
    missing = work / "no-such-ca.pem"
    url = BrokerUrl("mqtts", "127.0.0.1", free_port(), ca_file=str(missing))
    line = one_line(run(*ONE_SHOT[command], "--broker", url.as_text(), cwd=work), EXIT_USAGE)
    assert line == (
        f"error: broker URL mqtts://127.0.0.1:{url.port}: ca={missing}: No such file or directory"
    )


def test_unreadable_or_unusable_tls_files_are_named(auth_broker: AuthBroker, work: Path) -> None:
    base = auth_broker.tls
    cases = {
        # A directory: open() fails as on a file without read permission (root reads all).
        dataclasses.replace(base, ca_file=str(work)): f"ca={work}: Is a directory",
        dataclasses.replace(base, ca_file=str(auth_broker.files.key)): (
            f"ca={auth_broker.files.key}: not usable (X509: NO_CERTIFICATE_OR_CRL_FOUND)"
        ),
        dataclasses.replace(base, cert_file=str(work / "nope.crt")): (
            f"cert={work / 'nope.crt'}: No such file or directory"
        ),
        dataclasses.replace(
            base, cert_file=str(auth_broker.files.cert), key_file=str(work / "nope.key")
        ): f"key={work / 'nope.key'}: No such file or directory",
    }
    for url, says in cases.items():
        line = one_line(run("tail", "--broker", url.as_text(), cwd=work), EXIT_USAGE)
        assert line == f"error: broker URL mqtts://{USER}@127.0.0.1:{base.port}: {says}"


# --- a link that does not come up says why ---------------------------------------------------
async def test_link_down_carries_the_last_connection_error(auth_broker: AuthBroker) -> None:
    wrong = dataclasses.replace(auth_broker.plain, password="not the password")
    link = MqttLink(wrong, LinkOptions("t-refused", persistent_session=False))
    task = asyncio.create_task(link.run(lambda _message: None))
    try:
        deadline = time.monotonic() + 10
        while link.last_connect_error is None:
            assert time.monotonic() < deadline, "no connect attempt failed within 10 s"
            await asyncio.sleep(0.01)
        with pytest.raises(LinkDown) as down:
            await link.wait_up(0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert str(down.value) == (
        f"no connection to {wrong} within 0 s (last error: [code:135] Not authorized)"
    )
