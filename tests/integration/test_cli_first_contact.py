"""What a new user meets first, run as they run it (the installed ``trigger-mesh`` script in
a process of its own): --version, shell completion, ``config check``, a daemon started
with a bad config (docs/cli.md)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

SCRIPT = str(Path(sys.executable).parent / "trigger-mesh")
REPO = Path(__file__).resolve().parents[2]


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def test_version_names_the_distribution_and_python() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"trigger-mesh {version('trigger-mesh')} (Python {platform.python_version()})\n"
    )


def test_show_completion_prints_a_bash_script() -> None:
    result = run("--show-completion", "bash")
    assert result.returncode == 0, result.stderr
    assert "complete -o default -F _trigger_mesh_completion trigger-mesh" in result.stdout
    assert "_TRIGGER_MESH_COMPLETE=complete_bash" in result.stdout


def test_completion_protocol_completes_commands_and_subcommands() -> None:
    """What the installed bash script asks the program (click's environment protocol)."""

    def complete(words: str) -> list[str]:
        cword = str(len(words.split()) - 1)
        result = run(
            env={
                "_TRIGGER_MESH_COMPLETE": "complete_bash",
                "COMP_WORDS": words,
                "COMP_CWORD": cword,
            }
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert complete("trigger-mesh gat") == ["gateway"]
    assert complete("trigger-mesh config ch") == ["check"]
    assert "--kind" in complete("trigger-mesh trigger --ki")


# --- config check -----------------------------------------------------------------------------
def test_config_check_reports_every_problem_of_every_file(tmp_path: Path) -> None:
    good = tmp_path / "camera.yaml"
    good.write_text("camera_id: bwc-1\nunit: car-1\n")
    bad = tmp_path / "gateway.yaml"
    bad.write_text(
        "unit: car-1\nbrokr: mqtt://127.0.0.1:1883\nstatus_interval_s: -1\n"
        f"log: {tmp_path}/missing/x.db\naudit:\n  retension_days: 3\n"
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("unit: car-1\nkinds: [1\nx: 2\n")
    result = run("config", "check", str(good), str(bad), str(broken))
    assert result.returncode == 2
    assert result.stdout == f"{good}: valid camera config\n"
    assert result.stderr.splitlines() == [
        # pydantic's order: the model's fields, then the keys it does not know
        f"error: {bad}: key 'status_interval_s': Input should be greater than 0",
        f"error: {bad}: key 'audit.retension_days': unknown key (did you mean 'retention_days'?)",
        f"error: {bad}: key 'brokr': unknown key (did you mean 'broker'?)",
        f"error: {broken}: top level: not valid YAML at line 3, column 2: "
        "expected ',' or ']', but got ':'",
    ]


def test_config_check_of_the_shipped_configs_copied_out_exits_0(tmp_path: Path) -> None:
    # As docs/install.md has a user do: copy them out, make the BLE keystore, check there.
    copied = run("files", "configs", "--out", str(tmp_path), cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    configs = tmp_path / "configs"
    names = sorted(p.name for p in configs.glob("*.yaml"))
    assert names == sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
    made = run(
        "keys", "new-sensor", "--keystore", "keystore.yaml", "--kind", "holster",
        "--unit", "car-12", "--key-file", "holster.json", cwd=configs,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    result = run("config", "check", *names, cwd=configs)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "gateway.yaml: valid gateway config" in result.stdout
    assert "gateway-can.yaml: valid gateway config" in result.stdout
    assert "fleet.yaml: valid fleet config" in result.stdout


def test_config_check_kind_option(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("defaults: {radius_mm: 3}\n")
    assert run("config", "check", str(path)).returncode == 2  # told from its keys: a policy
    result = run("config", "check", "--kind", "camera", str(path))
    assert result.returncode == 2
    assert f"error: {path}: key 'camera_id': required key is missing" in result.stderr
    unknown = run("config", "check", "--kind", "toaster", str(path))
    assert unknown.returncode == 2
    assert "--kind must be one of gateway, camera, policy, fleet, trust, users" in unknown.stderr
    vague = tmp_path / "v.yaml"
    vague.write_text("colour: red\n")
    result = run("config", "check", str(vague))
    assert result.returncode == 2
    assert "cannot tell which kind of config this is (give --kind" in result.stderr


# --- a daemon started with a bad config says what config check says ---------------------------
# (Readable lines with --log-format console, as on a terminal; one JSON record with JSON logs:
# tests/integration/test_fatal_errors_logged.py.)
def test_gateway_start_prints_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"unit: car-1\nbrokr: x\nstatus_interval_s: 0\nlog: {tmp_path}/no/dir/x.db\n")
    result = run("gateway", "--config", str(path), "--log-format", "console", timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: config error: {path}: key 'status_interval_s': Input should be greater than 0",
        f"error: config error: {path}: key 'brokr': unknown key (did you mean 'broker'?)",
    ]


def test_gateway_refuses_a_log_whose_directory_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    log = tmp_path / "no" / "dir" / "x.db"
    path.write_text(f"unit: car-1\nbroker: mqtt://127.0.0.1:1\nlog: {log}\n")
    result = run("gateway", "--config", str(path), "--log-format", "console", timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: config error: {path}: key 'log': {log}: directory {log.parent} does not "
        "exist (create it first)"
    ]
    assert not (tmp_path / "no").exists()


def test_a_missing_keystore_stops_the_gateway_until_keys_new_sensor_makes_it(
    tmp_path: Path,
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "unit: car-12\nbroker: mqtt://127.0.0.1:1\nlog: car-12.db\n"
        "ble: {transport: 'tcp-client:127.0.0.1:1', keystore: keystore.yaml, "
        "counters: ble-counters.db}\n"
    )
    keystore = tmp_path / "keystore.yaml"
    problem = (
        f"{config}: key 'ble.keystore': {keystore}: no such keystore (make it with "
        f"`trigger-mesh keys new-sensor --keystore {keystore} --kind KIND --unit UNIT "
        "--key-file FILE`)"
    )
    started = run("gateway", "--config", str(config), "--log-format", "console", cwd=tmp_path)
    assert started.returncode == 2, started.stderr
    assert started.stderr.splitlines() == [f"error: config error: {problem}"]
    checked = run("config", "check", str(config), cwd=tmp_path)
    assert checked.returncode == 2
    assert checked.stderr.splitlines() == [f"error: {problem}"]
    assert not keystore.exists()  # neither made it
    made = run(
        "keys", "new-sensor", "--keystore", str(keystore), "--kind", "holster",
        "--unit", "car-12", "--key-file", str(tmp_path / "holster.json"), cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    checked = run("config", "check", str(config), cwd=tmp_path)
    assert (checked.returncode, checked.stderr) == (0, "")


def test_config_check_reads_the_tls_files_of_the_broker_url(tmp_path: Path) -> None:
    """As the daemon does at start: a link would otherwise die on the file when it connects."""
    ca = tmp_path / "no-such-ca.pem"
    path = tmp_path / "camera.yaml"
    path.write_text(f"camera_id: bwc-1\nunit: car-1\nbroker: 'mqtts://127.0.0.1:1?ca={ca}'\n")
    result = run("config", "check", str(path))
    assert result.returncode == 2
    assert result.stderr == (
        f"error: {path}: key 'broker': Value error, broker URL mqtts://127.0.0.1:1: ca={ca}: "
        "No such file or directory\n"
    )


def test_brackets_in_a_problem_are_printed_as_written(tmp_path: Path) -> None:
    # rich would take "[can]" or "[bold]" for markup and drop it from the line.
    path = tmp_path / "camera.yaml"
    path.write_text("camera_id: bwc-1\nunit: car-1\n'[bold]x': 1\n")
    result = run("config", "check", str(path))
    assert result.returncode == 2
    assert result.stderr == f"error: {path}: key '[bold]x': unknown key (known here: " + (
        "accuracy_m, ble_address, broker, camera_id, control_socket, groups, heartbeat_s, "
        "officer, position, pre_event_buffer_s, record_s, recorder, role, security, "
        "topic_prefix, unit)\n"
    )
