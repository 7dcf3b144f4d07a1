"""The package as a user installs it: the wheel carries the shipped files, and a fresh
virtualenv with the core only (no extra, at constraints.txt's versions, non-editable) runs
the CLI and the gateway, names the extra a command lacks in one line with exit 69, and
copies the shipped files out. Also: the gateway's modules import no optional package."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.extras import EXIT_MISSING_EXTRA, EXTRAS
from mesh.files import PRIVATE
from mesh.protocol.models import ActivationRecord

REPO = Path(__file__).resolve().parents[2]
OPTIONAL_MODULES = sorted(
    {module for packages in EXTRAS.values() for _, module in packages if module.isidentifier()}
)
# The repository's file → where the wheel carries it.
SHIPPED = [
    # pyproject.toml's package-data globs: configs/*.yaml, configs/can/*.yaml and *.dbc.
    *((p, f"mesh/files/configs/{p.relative_to(REPO / 'configs').as_posix()}")
      for p in (
          *(REPO / "configs").glob("*.yaml"),
          *(REPO / "configs" / "can").glob("*.yaml"),
          *(REPO / "configs" / "can").glob("*.dbc"),
      )
      if f"configs/{p.relative_to(REPO / 'configs').as_posix()}" not in PRIVATE),
    *((p, f"mesh/files/systemd/{p.name}") for p in (REPO / "deploy" / "systemd").iterdir()),
    *((p, f"mesh/files/schemas/{p.name}") for p in (REPO / "docs" / "schemas").glob("*.json")),
    (REPO / "docs" / "asyncapi.yaml", "mesh/files/asyncapi.yaml"),
]  # fmt: skip


def _env() -> dict[str, str]:
    # Nothing of the repository or of the test's virtualenv may leak into the fresh one.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd, env=_env()
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: setuptools keeps what it once copied in the tree's build/, which
    # would hide a file the package data no longer names.
    source = tmp_path_factory.mktemp("source") / "trigger-mesh"
    skip = shutil.ignore_patterns(
        ".git", ".venv*", "build", "*.egg-info", "node_modules", "__pycache__", ".*_cache",
        ".hypothesis", "var",
    )  # fmt: skip
    shutil.copytree(REPO, source, symlinks=True, ignore=skip)
    out = tmp_path_factory.mktemp("wheel")
    built = _run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(out)], out
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = out.glob("trigger_mesh-*.whl")
    return found


@pytest.fixture(scope="module")
def core(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the wheel and the core dependencies only: its bin/."""
    venv = tmp_path_factory.mktemp("core") / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], venv.parent)
    assert made.returncode == 0, made.stderr
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    installed = _run([*pip, "-c", str(REPO / "constraints.txt"), str(wheel)], venv.parent)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv / "bin"


@pytest.fixture(scope="module")
def demo(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with what `make demo` installs: the wheel with `[demo]` only."""
    venv = tmp_path_factory.mktemp("demo") / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], venv.parent)
    assert made.returncode == 0, made.stderr
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    installed = _run([*pip, "-c", str(REPO / "constraints.txt"), f"{wheel}[demo]"], venv.parent)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv / "bin"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    # Not the repository: `python -c` there would import mesh from the working tree.
    return tmp_path


def test_the_wheel_carries_configs_rules_units_and_schemas(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for source, inside in SHIPPED:
            assert inside in names, inside
            assert archive.read(inside) == source.read_bytes(), inside  # files, not links
    assert "mesh/files/configs/can/ford-police-interceptor.yaml" in names
    # gateway-can.yaml's DBC, a link in the repository: its content in the wheel.
    assert "mesh/files/configs/can/demo-vehicle.dbc" in names
    assert "mesh/files/systemd/trigger-mesh-gateway.service" in names


def test_the_core_install_holds_no_optional_package(core: Path, work: Path) -> None:
    probe = (
        "import importlib.util, json, sys\n"
        f"print(json.dumps([m for m in {OPTIONAL_MODULES!r} if importlib.util.find_spec(m)]))"
    )
    result = _run([str(core / "python"), "-c", probe], work)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    # And the code comes from the wheel, not from the working tree.
    where = _run([str(core / "python"), "-c", "import mesh; print(mesh.__file__)"], work)
    assert where.stdout.startswith(str(core.parent)), where.stdout


def _commands() -> list[list[str]]:
    """Every command and subcommand of the CLI, as the words that name it."""
    import typer

    from mesh.cli.app import app

    def walk(command: Any, path: list[str]) -> list[list[str]]:
        found = [path]
        # A group has .commands (typer carries its own copy of click: no isinstance here).
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            found += walk(sub, [*path, name])
        return found

    return walk(typer.main.get_command(app), [])


def test_every_command_s_help_works_on_the_core(core: Path, work: Path) -> None:
    commands = _commands()
    assert ["gateway"] in commands
    assert ["archiver", "migrate"] in commands
    for words in commands:
        result = _run([str(core / "trigger-mesh"), *words, "--help"], work, timeout=60)
        assert result.returncode == 0, (words, result.stdout + result.stderr)
        assert "Usage" in result.stdout, words


@pytest.mark.parametrize(
    ("args", "package", "extra"),
    [
        (["ble-radio"], "bumble", "bumble"),
        (
            ["ble-sensor", "--key-file", "k.json", "--event", "draw", "--transport", "usb:0"],
            "bumble",
            "bumble",
        ),
        (["can-diff", "a.log", "--split-at", "1"], "python-can", "can"),
        (["audit", "report", "car.db", "--out", "report"], "matplotlib", "report"),
        # Daemons log JSON off a terminal, their fatal error too: asked for lines here.
        (["dispatch", "--users", "users.yaml", "--log-format", "console"], "starlette", "console"),
        (
            ["archiver", "--log-format", "console", "--db", "postgresql://127.0.0.1/test"],
            "psycopg",
            "archive",
        ),
        (["archiver", "migrate", "--db", "postgresql://127.0.0.1/test"], "psycopg", "archive"),
        (
            ["archiver", "verify", "--log-id", "x", "--db", "postgresql://127.0.0.1/t"],
            "psycopg",
            "archive",
        ),
        (["demo"], "bumble", "demo"),
    ],
)
def test_a_command_without_its_extra_says_which_in_one_line(
    core: Path, work: Path, args: list[str], package: str, extra: str
) -> None:
    result = _run([str(core / "trigger-mesh"), *args], work, timeout=60)
    assert result.returncode == EXIT_MISSING_EXTRA, result.stdout + result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: trigger-mesh ")
    assert f"needs {package}, which is not installed: pip install 'trigger-mesh[{extra}]'" in line


def test_files_come_out_of_the_installed_package(core: Path, work: Path) -> None:
    out = work / "shipped"
    result = _run([str(core / "trigger-mesh"), "files", "--out", str(out)], work)
    assert result.returncode == 0, result.stderr
    for source, inside in SHIPPED:
        copied = out / inside.removeprefix("mesh/files/")
        assert copied.read_bytes() == source.read_bytes(), copied
    listed = _run([str(core / "trigger-mesh"), "files", "configs"], work)
    assert "configs/can/ford-police-interceptor.yaml" in listed.stdout


@pytest.mark.parametrize(
    ("config", "needs", "extra"),
    [
        ("gateway-can.yaml", "key 'can': this section needs python-can", "can"),
        # backend: bumble (an HCI controller, here the virtual radio): bumble, not [ble].
        ("gateway-ble.yaml", "key 'ble': backend bumble needs bumble", "bumble"),
        # The same config through BlueZ needs bleak only: [ble].
        ("gateway-bluez.yaml", "key 'ble': backend bluez needs bleak", "ble"),
    ],
)
def test_a_gateway_config_names_the_extra_of_its_sources(
    core: Path, work: Path, mosquitto: MosquittoProcess, config: str, needs: str, extra: str
) -> None:
    # The example configs as a user gets them out of the package, the BLE keystore made:
    # the missing extra is then the one problem, and the status says so (69, not 2).
    copied = _run([str(core / "trigger-mesh"), "files", "configs", "--out", str(work)], work)
    assert copied.returncode == 0, copied.stderr
    configs = work / "configs"
    _new_sensor(core, configs)
    ble = (configs / "gateway-ble.yaml").read_text()
    assert "  backend: bumble\n" in ble
    (configs / "gateway-bluez.yaml").write_text(
        ble.replace("  backend: bumble\n", "  backend: bluez\n")
    )
    result = _run(
        [str(core / "trigger-mesh"), "gateway", "--config", config, "--broker", str(mosquitto.url),
         "--log-format", "console"],
        configs,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == EXIT_MISSING_EXTRA, result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    assert f"{config}: {needs}" in line
    assert line.endswith(f"pip install 'trigger-mesh[{extra}]'"), line


def _new_sensor(venv: Path, configs: Path) -> None:
    """The BLE gateway's keystore, as docs/ble-format.md makes it (no extra needed)."""
    made = _run(
        [
            str(venv / "trigger-mesh"), "keys", "new-sensor", "--keystore", "keystore.yaml",
            "--kind", "holster", "--unit", "car-12", "--key-file", "holster.json",
        ],
        configs,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr


def test_the_ble_extra_brings_bleak_without_bumble(core: Path, work: Path, wheel: Path) -> None:
    # What pip would add to the core for `[ble,can]`: resolved, nothing installed (the core
    # venv is shared by the other tests). `[bumble]`'s content: the demo venv's test.
    result = _run(
        [
            str(core / "python"), "-m", "pip", "install", "--dry-run", "--quiet", "--report",
            "-", "-c", str(REPO / "constraints.txt"), f"{wheel}[ble,can]",
        ],
        work,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    added = {item["metadata"]["name"].lower() for item in json.loads(result.stdout)["install"]}
    assert {"bleak", "python-can", "cantools", "msgpack"} <= added
    assert not added & {"bumble", "prompt-toolkit", "wcwidth", "pyusb", "pyserial"}, added


async def _until_online(url: BrokerUrl, topics: Topics, gateway: str, cameras: int) -> None:
    """Wait, on retained messages, until the gateway and the cameras are online."""
    online: set[str] = set()

    def seen(message: Inbound) -> None:
        if json.loads(message.payload).get("online"):
            online.add(message.topic)

    link = MqttLink(
        url,
        LinkOptions(
            f"install-wait-{os.getpid()}",
            subscriptions=((topics.gateway(gateway), 1), (topics.all_presence(), 1)),
            persistent_session=False,
        ),
    )
    task = asyncio.create_task(link.run(seen))
    try:
        deadline = time.monotonic() + 30
        while not (topics.gateway(gateway) in online and len(online) > cameras):
            assert time.monotonic() < deadline, sorted(online)
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.terminate()
    for proc in started:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_gateway_runs_on_the_core_install(
    core: Path,
    work: Path,
    mosquitto: MosquittoProcess,
    topics: Topics,
    processes: list[subprocess.Popen[str]],
) -> None:
    broker = str(mosquitto.url)
    config = work / "gateway.yaml"
    config.write_text(
        f"unit: car-12\nbroker: {broker}\ntopic_prefix: {topics.prefix}\n"
        f"log: {work / 'car-12.db'}\nposition: {{lat: 39.952583, lon: -75.165222}}\n"
    )
    common = ["--broker", broker, "--prefix", topics.prefix]
    cli = str(core / "trigger-mesh")
    for args in (
        ["gateway", "--config", str(config), "--log-format", "json"],
        ["cameras", "--count", "3", "--spread-m", "50", "--unit-prefix", "car", *common],
    ):
        processes.append(
            subprocess.Popen(
                [cli, *args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
                cwd=work,
                env=_env(),
            )
        )
    asyncio.run(_until_online(mosquitto.url, topics, "gw-car-12", 3))
    assert all(proc.poll() is None for proc in processes)
    position = ["--lat", "39.952583", "--lon", "-75.165222"]
    result = _run(
        [cli, "trigger", "--kind", "manual", "--unit", "car-12", *position, "--json", *common],
        work,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    record = ActivationRecord.model_validate_json(result.stdout.strip().splitlines()[-1])
    assert record.state == "confirmed"
    assert len(record.cameras) == 3


def test_the_gateway_modules_import_no_optional_package(work: Path) -> None:
    """What the gateway daemon and the CLI load at start import with every optional
    package made unimportable, in this (full) environment. (Blocked rather than looked
    for in sys.modules: cryptography imports bcrypt, the central extra's, by itself when
    it is installed, and goes on without it.)"""
    probe = (
        "import json, sys\n"
        f"for name in {OPTIONAL_MODULES!r}:\n"
        "    sys.modules[name] = None  # import raises ImportError\n"
        "import mesh.cli.app, mesh.gateway.build, mesh.gateway.daemon, mesh.config\n"
        "import triggers.ble.settings, triggers.can.settings\n"
        f"print(json.dumps(sorted(m for m in {OPTIONAL_MODULES!r} "
        "if sys.modules.get(m) is not None)))"
    )
    env = _env() | {"PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=work,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_the_demo_runs_on_its_extra_alone(demo: Path, work: Path) -> None:
    probe = (
        "import importlib.util, json\n"
        f"print(json.dumps([m for m in {OPTIONAL_MODULES!r} if importlib.util.find_spec(m)]))"
    )
    found = _run([str(demo / "python"), "-c", probe], work)
    assert sorted(json.loads(found.stdout)) == sorted(module for _, module in EXTRAS["demo"]), (
        found.stderr
    )  # no console, archive or report package came with it
    result = _run([str(demo / "trigger-mesh"), "demo", "--json"], work, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["ok"] is True


def test_config_check_on_the_core_names_the_extra_a_section_needs(core: Path, work: Path) -> None:
    copied = _run([str(core / "trigger-mesh"), "files", "configs", "--out", str(work)], work)
    assert copied.returncode == 0, copied.stderr
    configs = work / "configs"
    text = (configs / "gateway-can.yaml").read_text()
    assert "\nlog: car-12.db " in text
    (configs / "gateway-can-mistyped.yaml").write_text(
        text.replace("\nlog: car-12.db ", "\nlog: nodir/car-12.db ")
    )
    result = _run(
        [
            str(core / "trigger-mesh"), "config", "check", "gateway.yaml", "gateway-can.yaml",
            "gateway-can-mistyped.yaml",
        ],
        configs,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "gateway.yaml: valid gateway config\n"
    missing = (
        "key 'can': this section needs python-can, which is not installed: "
        "pip install 'trigger-mesh[can]'"
    )
    # The missing extra is one problem: the check goes on to the others of the file.
    assert result.stderr.splitlines() == [
        f"error: gateway-can.yaml: {missing}",
        f"error: gateway-can-mistyped.yaml: {missing}",
        f"error: gateway-can-mistyped.yaml: key 'log': nodir/car-12.db: directory "
        f"{configs / 'nodir'} does not exist (create it first)",
    ]


def test_config_check_on_the_core_names_the_extra_of_the_ble_backend(
    core: Path, work: Path
) -> None:
    # `config check` decides the extra as the gateway does at start: the backend names it
    # (a problem of the file: exit 2, as for the CAN section).
    copied = _run([str(core / "trigger-mesh"), "files", "configs", "--out", str(work)], work)
    assert copied.returncode == 0, copied.stderr
    configs = work / "configs"
    bumble = _run([str(core / "trigger-mesh"), "config", "check", "gateway-ble.yaml"], configs)
    assert bumble.returncode == 2, bumble.stdout + bumble.stderr
    # With the keystore, read without the extra: nobody has made it yet.
    ble, keystore = bumble.stderr.splitlines()
    assert ble.startswith("error: gateway-ble.yaml: key 'ble': backend bumble needs bumble")
    assert ble.endswith("pip install 'trigger-mesh[bumble]'")
    assert keystore.startswith(
        "error: gateway-ble.yaml: key 'ble.keystore': keystore.yaml: no such keystore (make it "
        "with `trigger-mesh keys new-sensor --keystore keystore.yaml"
    )
    # The gateway says the same at start; a missing extra is not all that is wrong: 2.
    started = _run(
        [str(core / "trigger-mesh"), "gateway", "--config", "gateway-ble.yaml", "--log-format",
         "console"],
        configs,
    )  # fmt: skip
    assert started.returncode == 2, started.stdout + started.stderr
    assert started.stderr.splitlines() == [
        line.replace("error: ", "error: config error: ", 1) for line in (ble, keystore)
    ]
    text = (configs / "gateway-ble.yaml").read_text()
    (configs / "gateway-bluez.yaml").write_text(text.replace("backend: bumble", "backend: bluez"))
    bluez = _run([str(core / "trigger-mesh"), "config", "check", "gateway-bluez.yaml"], configs)
    assert bluez.returncode == 2, bluez.stdout + bluez.stderr
    assert "pip install 'trigger-mesh[ble]'" in bluez.stderr


@contextmanager
def _notify_socket() -> Iterator[socket.socket]:
    """The receiving end of $NOTIFY_SOCKET (abstract: no path to outgrow), as systemd has
    it for a Type=notify unit; its name is what ``getsockname`` gives, with ``@``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(f"\0trigger-mesh-install-{uuid.uuid4().hex}")
        sock.settimeout(60)
        yield sock


def _until_ready(sock: socket.socket, proc: subprocess.Popen[str]) -> None:
    """Block until the gateway says READY=1, which it does once its log is open, before
    any broker is needed. One that dies says nothing: the wait fails with its stderr."""
    while True:
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"no READY=1 within 60 s: {err[-2000:]}") from None
        if "READY=1" in message.splitlines():
            return


def test_every_shipped_config_works_from_a_fresh_copy(
    demo: Path, work: Path, mosquitto: MosquittoProcess
) -> None:
    """What a user of an installed package does: copy the configs out, make the BLE
    keystore, check them and start each gateway there, with no directory made by hand."""
    cli = str(demo / "trigger-mesh")
    copied = _run([cli, "files", "configs", "--out", str(work)], work)
    assert copied.returncode == 0, copied.stderr
    configs = work / "configs"
    names = sorted(p.name for p in configs.glob("*.yaml"))
    assert names == sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
    # Before a sensor is provisioned the BLE gateway's keystore is missing, and said to be.
    first = _run([cli, "config", "check", *names], configs)
    assert first.returncode == 2, first.stdout + first.stderr
    assert first.stderr.splitlines() == [
        "error: gateway-ble.yaml: key 'ble.keystore': keystore.yaml: no such keystore (make it "
        "with `trigger-mesh keys new-sensor --keystore keystore.yaml --kind KIND --unit UNIT "
        "--key-file FILE`)"
    ]
    _new_sensor(demo, configs)
    checked = _run([cli, "config", "check", *names], configs)
    assert (checked.returncode, checked.stderr) == (0, ""), checked.stdout
    assert checked.stdout.count(": valid ") == len(names)

    for name in ("gateway.yaml", "gateway-ble.yaml", "gateway-can.yaml"):
        with _notify_socket() as systemd:
            address = "@" + systemd.getsockname()[1:].decode()
            proc = subprocess.Popen(
                [cli, "gateway", "--config", name, "--broker", str(mosquitto.url),
                 "--log-format", "json"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                cwd=configs,
                env=_env() | {"NOTIFY_SOCKET": address},
            )  # fmt: skip
            try:
                _until_ready(systemd, proc)  # its log, outbox, counters and DBC are open
                assert proc.poll() is None, name
            finally:
                proc.terminate()
                _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, f"{name}: {err[-2000:]}"
    written = {p.name for p in configs.iterdir()} - {*names, "can", "keystore.yaml"}
    assert {"car-12.db", "car-12.db.outbox", "ble-counters.db"} <= written, written
