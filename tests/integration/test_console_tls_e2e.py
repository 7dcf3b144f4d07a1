"""The dispatch console over HTTPS (issue 18 item 7): the real `trigger-mesh dispatch`
with --tls-cert/--tls-key, a certificate from a private CA, checked by Python's TLS client
and loaded by Chromium; bad TLS files stop it at start with one line."""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from openapi_schema_validator import validate as validate_instance

from bridge.mqtt.embedded import MosquittoProcess, free_port
from bridge.topics import Topics
from mesh.dispatch.console.auth import Role, add_user
from mesh.dispatch.console.tls import TlsError, TlsFiles, check_tls
from tests.conftest import CHROMIUM_ARGS
from tests.integration.test_cli import CLI, REPO, daemon, run
from tests.tls_helpers import make_tls

COMMITTED_OPENAPI = REPO / "docs" / "console-openapi.json"
BASIC = "Basic " + base64.b64encode(b"alice:alice-pass").decode()


def _users(tmp_path: Path) -> Path:
    path = tmp_path / "users.yaml"
    add_user(path, "alice", Role.DISPATCHER, "alice-pass")
    return path


def _fetch(url: str, context: ssl.SSLContext, *, login: bool = False) -> Any:
    headers = {"Authorization": BASIC} if login else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        return json.loads(response.read())


def _schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    """A component schema, with the components beside it for its $refs."""
    return {**document["components"]["schemas"][name], "components": document["components"]}


def _wait_for_healthz(base: str, context: ssl.SSLContext, proc: subprocess.Popen[str]) -> None:
    """Until the console answers (it binds, then uvicorn starts listening) or exits."""
    deadline = time.monotonic() + 20
    while True:
        try:
            _fetch(base + "/healthz", context)
            return
        except (urllib.error.URLError, ConnectionError) as exc:
            failed = exc
        if proc.poll() is not None:
            raise AssertionError("the console exited")
        if time.monotonic() > deadline:
            raise AssertionError(f"no answer over HTTPS: {failed}")
        time.sleep(0.1)


async def test_the_console_serves_https_with_the_given_certificate(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, chromium: str
) -> None:
    from playwright.async_api import async_playwright

    tls = make_tls(tmp_path / "tls")
    port = free_port()
    trusted = ssl.create_default_context(cafile=str(tls.ca))
    base = f"https://127.0.0.1:{port}"
    with daemon(
        "dispatch",
        "--users",
        str(_users(tmp_path)),
        "--broker",
        str(mosquitto.url),
        "--port",
        str(port),
        "--prefix",
        topics.prefix,
        "--tls-cert",
        str(tls.cert),
        "--tls-key",
        str(tls.key),
    ) as proc:
        _wait_for_healthz(base, trusted, proc)
        # Verified against the private CA, for its IP address.
        state = _fetch(base + "/api/state", trusted, login=True)
        assert (state["user"], state["role"]) == ("alice", "dispatcher")
        # The served API document is the committed one (`make schema` writes it), and
        # what the console answers is what it documents.
        served = _fetch(base + "/openapi.json", trusted)
        assert served == json.loads(COMMITTED_OPENAPI.read_text()), "run `make schema`"
        validate_instance(state, _schema(served, "State"))
        with pytest.raises(urllib.error.HTTPError) as refused:
            _fetch(base + "/api/state", trusted)
        assert refused.value.code == 401
        validate_instance(json.loads(refused.value.read()), _schema(served, "Error"))
        # A client that does not trust the CA refuses the certificate: it is the one served.
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            _fetch(base + "/healthz", ssl.create_default_context())
        # Plain HTTP on the TLS port gets no page.
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))
            try:
                context = await browser.new_context(
                    http_credentials={"username": "alice", "password": "alice-pass"},
                    ignore_https_errors=True,  # the test CA is not in Chromium's store
                )
                page = await context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                response = await page.goto(base + "/")
                assert response is not None
                assert response.status == 200
                assert page.url.startswith("https://")
                await page.wait_for_selector("#conn.up", timeout=10_000)
                # The user comes with the stream's first event, just after it opens.
                who = page.locator("#who", has_text="alice (dispatcher)")
                await who.wait_for(timeout=5_000)
                assert errors == []
            finally:
                await browser.close()


def test_bad_tls_files_are_one_line_at_start(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    other = make_tls(tmp_path / "other")
    users = str(_users(tmp_path))

    def refused(*args: str) -> str:
        result = run(
            "dispatch",
            "--users",
            users,
            *args,
            "--port",
            "0",
            "--log-format",
            "console",
            timeout=30,
        )
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        return lines[0]

    missing = tmp_path / "missing.crt"
    line = refused("--tls-cert", str(missing), "--tls-key", str(tls.key))
    assert line == f"error: --tls-cert {missing}: No such file or directory"
    line = refused("--tls-cert", str(tmp_path), "--tls-key", str(tls.key))
    assert line == f"error: --tls-cert {tmp_path}: Is a directory"
    line = refused("--tls-cert", str(tls.key), "--tls-key", str(tls.key))
    assert line == f"error: --tls-cert {tls.key}: not a PEM certificate"
    line = refused("--tls-cert", str(tls.cert), "--tls-key", str(tls.cert))
    assert line.startswith(f"error: --tls-key {tls.cert}: not a PEM private key")
    line = refused("--tls-cert", str(tls.cert), "--tls-key", str(other.key))
    assert re.fullmatch(
        rf"error: --tls-key {other.key} does not belong to --tls-cert {tls.cert} \(.+\)", line
    )
    line = refused("--tls-cert", str(tls.cert))
    assert line == "error: give both --tls-cert and --tls-key, or neither"


def test_an_encrypted_key_needs_its_password(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls", key_password=b"key-pass")
    with pytest.raises(TlsError, match="is encrypted: give --tls-key-password"):
        check_tls(TlsFiles(tls.cert, tls.key))
    with pytest.raises(TlsError, match="not a PEM private key, or the wrong password"):
        check_tls(TlsFiles(tls.cert, tls.key, "wrong"))
    assert check_tls(TlsFiles(tls.cert, tls.key, "key-pass")).subject.rfc4514_string() == (
        "CN=console.test"
    )
    # Through the CLI, the password comes from the environment (not the process list).
    env = {**os.environ, "TRIGGER_MESH_TLS_KEY_PASSWORD": "wrong"}
    result = subprocess.run(
        [
            *CLI,
            "dispatch",
            "--users",
            str(_users(tmp_path)),
            "--port",
            "0",
            "--tls-cert",
            str(tls.cert),
            "--tls-key",
            str(tls.key),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "not a PEM private key, or the wrong password" in result.stderr
