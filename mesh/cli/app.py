"""The ``trigger-mesh`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer
import yaml

from bridge.mqtt.client import LinkDown, LinkOptions, MqttLink
from bridge.topics import DEFAULT_PREFIX
from mesh.cli import (
    audit,
    broker,
    conformance,
    files,
    integrity,
    recording,
    recording_verify,
    replay,
)
from mesh.cli.archive import archiver_app, log_sync
from mesh.cli.common import (
    EXIT_NO_ANSWER,
    EXIT_NOT_CONFIRMED,
    EXIT_OK,
    EXIT_REFUSED,
    BrokerOpt,
    LogFormatOpt,
    LogLevelOpt,
    PrefixOpt,
    SigningKeyOpt,
    load_signer,
    seal_with_key,
)
from mesh.cli.common import broker_for as _broker_for
from mesh.cli.common import client_broker as _client_broker
from mesh.cli.common import configure_logs as _configure_logs
from mesh.cli.common import console as _console
from mesh.cli.common import fail as _fail
from mesh.cli.common import fail_config as _fail_config
from mesh.cli.common import reachable_broker as _reachable
from mesh.cli.common import run_until_signal as _run
from mesh.cli.common import security_of as _load_security
from mesh.cli.common import settle_when_ready as _settle_when_ready
from mesh.cli.common import topic_schema as _topics
from mesh.cli.config_check import GatewayConfigError, config_app, load_camera, load_gateway
from mesh.cli.errors import listen_failure_code, run_cli
from mesh.cli.keys import keys_app
from mesh.cli.recording import recording_app
from mesh.cli.tables import WideOpt, fit_width, table_console
from mesh.cli.version import VersionOpt
from mesh.documents import ConfigError
from mesh.extras import require
from mesh.ops import logs
from mesh.ops.runtime import settle_heap, tune_gc
from mesh.protocol.models import (
    ActivationRecord,
    ActivationState,
    GeoPoint,
    Position,
    ReceiptOutcome,
    TriggerEvent,
    TriggerKind,
    TriggerReceipt,
)
from triggers.manual import manual_trigger

if TYPE_CHECKING:
    from rich.console import Console

    from mesh.dispatch.watch import ActivationWatcher

app = typer.Typer(
    name="trigger-mesh",
    help="Camera activation mesh: triggers become logged record-start commands that every "
    "in-range camera confirms over MQTT.",
    no_args_is_help=True,
)
log_app = typer.Typer(help="Read the activation log.", no_args_is_help=True)
audit_app = typer.Typer(help="Verify, replay and report on activation logs.", no_args_is_help=True)
conformance_app = typer.Typer(
    help="Check a camera or a gateway against the protocol, over MQTT (docs/conformance.md).",
    no_args_is_help=True,
)


def _register_groups() -> None:
    """Every command group and every command defined outside this module, in one place
    (the commands defined here carry their ``@app.command`` decorator)."""
    app.add_typer(log_app, name="log")
    app.add_typer(keys_app, name="keys")
    app.add_typer(config_app, name="config")  # docs/cli.md
    app.add_typer(audit_app, name="audit")
    app.add_typer(archiver_app, name="archiver")  # the central archive (docs/archive.md)
    log_app.command("sync")(log_sync)
    audit_app.command("report")(audit.report)
    audit_app.command("verify")(integrity.verify)
    audit_app.command("hold")(integrity.hold)
    audit_app.command("prune")(integrity.prune)
    audit_app.command("replay")(replay.replay)
    app.command("broker-config")(broker.broker_config)  # docs/broker.md
    app.command("files")(files.files)  # shipped configs, units, schemas (docs/install.md)
    app.add_typer(conformance_app, name="conformance")  # docs/conformance.md
    conformance_app.command("camera")(conformance.camera)
    conformance_app.command("gateway")(conformance.gateway)
    app.add_typer(recording_app, name="recording")  # a camera's recordings (docs/camera.md)
    recording_app.command("stop")(recording.stop)
    recording_app.command("verify")(recording_verify.verify)


@app.callback()
def _root(version: VersionOpt = False) -> None:
    # No docstring: the app's help above is the one --help shows.
    del version  # handled by its eager callback


def main() -> None:
    run_cli(app)  # one line and a status of mesh.cli.errors.EXIT_CODES for known failures


# --- demo ---------------------------------------------------------------------------------
@app.command()
def demo(
    broker: BrokerOpt = None,
    log: Annotated[Path | None, typer.Option("--log", help="Keep the activation log here")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Summary as one JSON line")] = False,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="TLS + client certificates + ACL on a generated mosquitto, signed commands "
            "and acks, then four attacks (docs/security.md)",
        ),
    ] = False,
    real_video: Annotated[
        bool,
        typer.Option(
            "--real-video",
            help="Two cameras (bwc-12a, bwc-12b) really record FFmpeg's test pattern, sign "
            "a manifest of each recording, and the demo verifies them (docs/camera.md)",
        ),
    ] = False,
    video_dir: Annotated[
        Path,
        typer.Option("--video-dir", help="With --real-video: each run's folder goes here"),
    ] = Path("trigger-mesh-video"),
    central: Annotated[
        bool,
        typer.Option(
            "--central",
            help="The car bridged to a 3-node NATS JetStream cluster with two archivers "
            "(PostgreSQL, --db) and a dispatch console (docs/deployment.md)",
        ),
    ] = False,
    db: Annotated[
        str,
        typer.Option(
            "--db",
            envvar="TRIGGER_MESH_DB",
            help="With --central: the archive's PostgreSQL (schema trigger_mesh_central "
            "unless the DSN sets a search_path)",
        ),
    ] = "postgresql://127.0.0.1:5432/test",
    stay: Annotated[
        bool,
        typer.Option("--stay", help="With --central: keep everything running until Ctrl-C"),
    ] = False,
) -> None:
    """Run the whole mesh on this machine: broker, gateway, 20 cameras, a scripted scenario."""
    require("demo", "trigger-mesh demo")
    if central:
        for extra in ("central", "archive", "console"):
            require(extra, "trigger-mesh demo --central")
    from mesh.sim.demo import run_demo

    logs.configure("console", "warning")
    if broker is not None and broker != "embedded":
        _reachable(broker)
    console = _console(stderr=json_out)
    if secure and broker is not None:
        _fail("--secure starts its own locked-down broker: leave out --broker")
    if real_video:
        if secure or central:
            _fail("--real-video runs on the plain demo: leave out --secure and --central")
        _video_dir_usable(video_dir)
    if central and (secure or broker is not None):
        _fail("--central starts its own brokers, signed as --secure: leave out --secure, --broker")
    if stay and not central:
        _fail("--stay goes with --central")
    summary = _run(
        run_demo(
            broker=broker,
            log_path=log,
            console=console,
            live=True,
            secure=secure,
            video_dir=video_dir if real_video else None,
            central_db=db if central else None,
            stay=stay,
        )
    )
    if summary is None:
        raise typer.Exit(130)
    _print_demo_summary(console, summary)
    if json_out:
        print(json.dumps(summary, separators=(",", ":")))
    raise typer.Exit(EXIT_OK if summary["ok"] else EXIT_NOT_CONFIRMED)


def _video_dir_usable(video_dir: Path) -> None:
    """--real-video needs ffmpeg and a folder it can write (made if missing): said at once,
    exit 2, rather than as a camera fault in the middle of the demo."""
    import shutil

    if shutil.which("ffmpeg") is None:
        _fail("--real-video: ffmpeg not found (apt-get install -y ffmpeg)")
    try:
        video_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"--video-dir {video_dir}: cannot create it ({exc.strerror or exc})")
    if not os.access(video_dir, os.W_OK):
        _fail(f"--video-dir {video_dir}: not writable")


def _print_real_video(console: Console, video: dict[str, Any]) -> None:
    from mesh.dispatch.literal import literal

    console.print(literal(("real video", "bold"), f": {video['directory']}"))
    for item in video["recordings"]:
        console.print(
            f"  {item['camera_id']}: {item['directory']} — {item.get('segments', 0)} segments, "
            f"{item.get('seconds', 0)} s (pre-event {item.get('pre_event_kept_s')} s), "
            f"stopped {item.get('stop_reason')}; manifest {item['verdict']}",
            highlight=False,
        )
    console.print(
        f"  check one yourself: trigger-mesh recording verify DIR --trust {video['trust']}",
        highlight=False,
    )


def _print_demo_summary(console: Console, summary: dict[str, Any]) -> None:
    from mesh.dispatch.literal import literal

    console.line()
    for item in summary["activations"]:
        latency = item["latency_ms"]
        console.print(
            literal(
                (item["kind"], "bold"),
                f" ({item['source']}) {item['activation_id']}: {item['state']}; "
                f"targeted {len(item['targeted'])}, recording {len(item['started'])} "
                f"(newly started {len(item['newly_started'])}), missed {len(item['missed'])}, "
                f"out of range {len(item['out_of_range'])}; ack p50 {latency['p50']} ms, "
                f"max {latency['max']} ms",
            )
        )
    burst, replay = summary["duplicate_burst"], summary["replay"]
    dup = summary["duplicate_command"]
    duplicate = (
        ""
        if summary.get("security")
        else f"command redelivered → {dup['redelivery_acks']} acks, resent to one camera → "
        f"{dup['direct_resend']}, new recordings: {dup['new_recordings']}; "
    )
    console.print(
        f"holster burst: {burst['adverts']} adverts → {burst['activations']} activation; "
        f"replayed advert: {replay['adverts']} adverts, {replay['rejected']} rejected as replays, "
        f"{replay['activations']} activations; {duplicate}idle out-of-range cameras: "
        f"{', '.join(summary['idle_out_of_range'])}",
        highlight=False,
    )
    security = summary.get("security")
    if security is not None:
        refused = ", ".join(security["unsigned_commands_refused"]) or "none"
        console.print(
            f"attacks: no-certificate client "
            f"{'CONNECTED' if security['no_certificate_connected'] else 'refused'}; stolen "
            f"camera credentials delivered {security['stolen_camera_commands_delivered']} "
            f"commands and {security['stolen_camera_forged_acks_delivered']} forged acks; "
            f"unsigned command obeyed {security['unsigned_commands_obeyed']} times (refused by "
            f"{refused}); captured command replayed → "
            f"{security['replayed_new_recordings']} new recordings",
            highlight=False,
        )
    central = summary.get("central")
    if central is not None:
        console.print(
            f"central ({', '.join(central['nodes'])}): {len(central['archived'])} activations "
            f"archived in {central['archive']}, {len(central['console_saw'])} seen by the "
            f"console at {central['console']}",
            highlight=False,
        )
    audit = summary["audit"]
    console.print(
        f"activation log: {audit['records']} records, {audit['checkpoints']} signed "
        f"checkpoints, chain {audit['verdict']} (against the run's key); "
        f"{audit['triggers_replayed']} triggers replayed, "
        f"{audit['replay_differences']} decisions differ"
    )
    if summary.get("real_video") is not None:
        _print_real_video(console, summary["real_video"])
    for problem in summary["problems"]:
        console.print(literal(("problem:", "bold red"), " ", problem))
    if summary["ok"]:
        console.print(
            literal(
                ("OK", "bold green"),
                ": every in-range camera confirmed every activation, "
                "no out-of-range camera started",
            )
        )
    else:
        console.print(literal(("FAILED", "bold red")))


# --- gateway and cameras ------------------------------------------------------------------
@app.command()
def gateway(
    config: Annotated[Path, typer.Option("--config", help="Gateway YAML")],
    broker: BrokerOpt = None,
    log_format: LogFormatOpt = "auto",
    log_level: LogLevelOpt = "info",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            help="Serve /metrics and /health on this port (overrides metrics.port)",
        ),
    ] = None,
) -> None:
    """Run the in-car gateway daemon for one unit."""
    from mesh.gateway.build import Overrides, build_gateway, trigger_sources
    from mesh.ops.http import ListenError

    _configure_logs(log_format, log_level)  # first: a bad config is then a log record
    try:  # the same loading as `config check`: every problem at once
        loaded = load_gateway(config)
    except GatewayConfigError as exc:  # 69 when missing extras are all that is wrong
        _fail_config(exc, exc.exit_code)
    except ConfigError as exc:
        _fail_config(exc)
    cfg, policy, signer, security = loaded.config, loaded.policy, loaded.signer, loaded.security
    tune_gc()
    broker_value = broker or cfg.broker

    async def serve() -> None:
        async with _broker_for(broker_value) as (url, protocol):
            try:
                sources = trigger_sources(cfg, config)
            except ConfigError as exc:
                _fail_config(exc)
            try:
                gw = build_gateway(
                    cfg,
                    policy,
                    url=url,
                    protocol=protocol,
                    sources=sources,
                    signer=signer,
                    security=security,
                    # systemd_notify does nothing unless systemd started it (NOTIFY_SOCKET).
                    overrides=Overrides(metrics_port=metrics_port, systemd_notify=True),
                )
            except ListenError as exc:
                _fail(f"cannot serve /metrics and /health: {exc}", listen_failure_code(exc.errno))
            settle = asyncio.ensure_future(_settle_when_ready(gw.ready))
            try:
                await gw.run()
            finally:
                settle.cancel()

    _run(serve())


@app.command()
def camera(
    config: Annotated[Path, typer.Option("--config", help="Camera YAML")],
    broker: BrokerOpt = None,
    log_format: LogFormatOpt = "auto",
    log_level: LogLevelOpt = "info",
) -> None:
    """Run one camera (presence, commands, pre-event recorder, acks): simulated, or
    recording real video with FFmpeg (the config's recorder: section)."""
    from mesh.camera.agent import CameraAgent, CameraIdentity
    from mesh.camera.control import ControlError
    from mesh.camera.recorder import SimulatedRecorder
    from mesh.camera.recording.base import Recorder
    from mesh.config import control_socket_path

    _configure_logs(log_format, log_level)  # first: a bad config is then a log record
    try:
        cfg = load_camera(config)  # the recorder's device, ffmpeg and folder too
    except ConfigError as exc:
        _fail_config(exc)
    security = _load_security(cfg.security, config)

    async def serve() -> None:
        recorder: Recorder = SimulatedRecorder(
            powered_on_ns=time.time_ns(),
            buffer_s=cfg.pre_event_buffer_s,
            record_s=cfg.record_s,
        )
        if cfg.recorder.backend == "ffmpeg":
            from mesh.camera.recording.build import build_ffmpeg_recorder

            recorder = build_ffmpeg_recorder(cfg)
        async with _broker_for(broker or cfg.broker) as (url, protocol):
            agent = CameraAgent(
                CameraIdentity(
                    cfg.camera_id,
                    cfg.unit,
                    cfg.role,
                    officer=cfg.officer,
                    groups=cfg.groups,
                    ble_address=cfg.ble_address,
                    model=cfg.recorder.device_model,
                    serial=cfg.recorder.device_serial,
                ),
                url=url,
                topics=_topics(cfg.topic_prefix),
                position=cfg.position,
                accuracy_m=cfg.accuracy_m,
                recorder=recorder,
                protocol=protocol,
                heartbeat_s=cfg.heartbeat_s,
                security=security,
                control_socket=control_socket_path(cfg, config),
            )
            try:
                await agent.run()
            except ControlError as exc:
                _fail(str(exc))

    _run(serve())


@app.command()
def cameras(
    count: Annotated[int, typer.Option("--count", min=1, max=20000)] = 20,
    lat: Annotated[float, typer.Option("--lat", min=-90, max=90)] = 39.952583,
    lon: Annotated[float, typer.Option("--lon", min=-180, max=180)] = -75.165222,
    spread_m: Annotated[
        float, typer.Option("--spread-m", help="Disc the cars are spread over")
    ] = 500.0,
    per_unit: Annotated[int, typer.Option("--per-unit", min=1, help="Cameras per unit")] = 3,
    unit_prefix: Annotated[str, typer.Option("--unit-prefix")] = "unit",
    seed: Annotated[int, typer.Option("--seed")] = 1,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = DEFAULT_PREFIX,
    log_format: LogFormatOpt = "auto",
    log_level: LogLevelOpt = "warning",
    keys_dir: Annotated[
        Path | None,
        typer.Option("--keys-dir", help="Each camera signs its acks with DIR/<camera id>.key"),
    ] = None,
    trust: Annotated[
        Path | None, typer.Option("--trust", help="Trust store: commands are checked against it")
    ] = None,
) -> None:
    """Run a simulated fleet: N cameras in units around a point, one MQTT client each."""
    from mesh.security.checks import Security
    from mesh.sim.camera_fleet import build_agents, scatter, wait_all_up

    _configure_logs(log_format, log_level)
    tune_gc()
    topics = _topics(prefix)
    if _client_broker(broker) != "embedded":
        _reachable(_client_broker(broker))  # a fleet that cannot start says so at once
    specs = scatter(
        count,
        GeoPoint(lat=lat, lon=lon),
        radius_m=spread_m,
        cameras_per_unit=per_unit,
        unit_prefix=unit_prefix,
        seed=seed,
    )

    store = None
    if trust is not None:
        from mesh.security.trust import TrustStore

        try:
            store = TrustStore.load(trust)
        except ConfigError as exc:
            _fail(f"--trust: {exc}")
    signers = (
        {s.camera_id: load_signer(keys_dir / f"{s.camera_id}.key") for s in specs}
        if keys_dir is not None
        else {}
    )

    async def serve() -> None:
        async with _broker_for(_client_broker(broker)) as (url, protocol):
            agents = build_agents(
                specs,
                url=url,
                topics=topics,
                protocol=protocol,
                now_ns=time.time_ns(),
                security_of=lambda spec: Security(signer=signers.get(spec.camera_id), trust=store),
            )
            tasks = [asyncio.create_task(a.run()) for a in agents]
            try:
                await wait_all_up(agents, 60)
                settle_heap()
                units = len({s.unit_id for s in specs})
                _console(stderr=True).print(
                    f"{len(agents)} cameras in {units} units online at {url} (prefix {prefix})"
                )
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    _run(serve())


# --- trigger and tail ---------------------------------------------------------------------
@app.command()
def trigger(
    kind: Annotated[TriggerKind, typer.Option("--kind")],
    unit: Annotated[str, typer.Option("--unit")],
    lat: Annotated[float | None, typer.Option("--lat", min=-90, max=90)] = None,
    lon: Annotated[float | None, typer.Option("--lon", min=-180, max=180)] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="Source id (default user@host)")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the outcome")] = True,
    timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds to wait")] = 15.0,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the final record as JSON (of the activation the trigger started or "
            "was merged into), or the gateway's receipt when there is no record to wait for",
        ),
    ] = False,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = DEFAULT_PREFIX,
    signing_key: SigningKeyOpt = None,
    wide: WideOpt = False,
) -> None:
    """Send a manual trigger to a running gateway and report what the cameras did.

    Exit status: 0 confirmed (or merged into a recent activation), 1 partial or missed,
    2 usage error (a TLS file that cannot be read, credentials the broker refuses too),
    3 refused by policy, 4 no gateway answered, 75 broker unreachable.
    """
    from mesh.dispatch.literal import literal
    from mesh.dispatch.watch import ActivationWatcher

    logs.configure("console", "warning")
    if (lat is None) != (lon is None):
        _fail("--lat and --lon go together")
    topics = _topics(prefix)
    url = _reachable(_client_broker(broker))
    now = time.time_ns()
    position = None
    if lat is not None and lon is not None:
        position = Position(lat=lat, lon=lon, fix_at_ns=now)
    try:
        event = manual_trigger(
            kind,
            unit,
            source_id=source or f"cli:{getpass.getuser()}@{socket.gethostname()}",
            position=position,
            observed_at_ns=now,
        )
    except ValueError as exc:
        _fail(f"invalid trigger: {exc}")
    message = seal_with_key(signing_key, event)
    console = table_console(wide=wide, stderr=json_out)

    async def send() -> int:
        watcher = ActivationWatcher(
            url,
            topics,
            client_id=f"tm-trigger-{uuid.uuid4().hex[:8]}",
            unit_id=unit,
            final_only=True,
        )
        sender = MqttLink(
            url, LinkOptions(f"tm-cli-{uuid.uuid4().hex[:8]}", persistent_session=False)
        )
        tasks = [
            asyncio.create_task(watcher.run()),
            asyncio.create_task(sender.run(lambda _m: None)),
        ]
        try:
            await watcher.link.wait_up(10)
            await sender.publish(topics.trigger(unit), message, qos=1, wait_s=10)
            if not wait:
                console.print(literal(f"trigger {event.event_id} sent to unit {unit}"))
                return EXIT_OK
            receipt = await _receipt_resending(
                watcher, sender, topics.trigger(unit), event, message, min(timeout_s, 10.0)
            )
            if receipt is None:
                console.print(
                    literal(
                        (f"no gateway for unit {unit} answered", "bold red"),
                        f" (is `trigger-mesh gateway` running on {url}?)",
                    )
                )
                return EXIT_NO_ANSWER
            return await _report(watcher, event, receipt, console, json_out, timeout_s)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    code = _run(send())
    raise typer.Exit(130 if code is None else code)


async def _report(
    watcher: ActivationWatcher,
    event: TriggerEvent,
    receipt: TriggerReceipt,
    console: Console,
    json_out: bool,
    timeout_s: float,
) -> int:
    """What became of a trigger the gateway answered, and the exit status. With --json,
    stdout gets one JSON object: the final record of the activation the trigger started or
    was merged into, or the receipt when there is none to wait for."""
    from mesh.decide.admission import activation_id_for
    from mesh.dispatch.literal import literal
    from mesh.dispatch.render import camera_outcomes_table

    def answer(text: str) -> None:
        if json_out:
            print(text)

    if receipt.outcome is ReceiptOutcome.REJECTED:
        console.print(literal(("refused:", "bold red"), " ", receipt.reason))
        answer(receipt.model_dump_json())
        return EXIT_REFUSED
    aid = receipt.activation_id
    assert aid is not None
    # Merged into another trigger's activation. (A resend of this trigger answered as a
    # repeat names this trigger's own activation, which is reported as if accepted.)
    merged = receipt.outcome is ReceiptOutcome.SUPPRESSED and aid != activation_id_for(
        event.event_id
    )
    if merged:
        console.print(literal(f"merged into activation {aid}: {receipt.reason}"))
        if not receipt.activation_pending and await watcher.final_record(aid, 0) is None:
            # It had finished before this trigger came: its final record went out then and
            # is not retained, so the receipt is all there is.
            answer(receipt.model_dump_json())
            return EXIT_OK
    record = await watcher.final_record(aid, timeout_s)
    if record is None:
        console.print(literal(f"activation {aid} still pending after {timeout_s:g} s"))
        answer(receipt.model_dump_json())
        return EXIT_OK if merged else EXIT_NOT_CONFIRMED
    if json_out:
        print(record.model_dump_json())
    else:
        console.print(camera_outcomes_table(record, width=fit_width(console)))
        console.print(
            literal(
                f"activation {record.activation_id}: ",
                (record.state.value, "bold"),
                f", all acks in {record.all_acked_ms} ms",
            )
        )
    if merged or record.state is ActivationState.CONFIRMED:
        return EXIT_OK  # a merged trigger asked for nothing its activation had not
    return EXIT_NOT_CONFIRMED


# Until the gateway's receipt says a trigger arrived, it is sent again (same event id: the
# gateway merges repeats), so that one lost with a broker that died cannot go unnoticed.
RESEND_EVERY_S = 2.0


async def _receipt_resending(
    watcher: ActivationWatcher,
    sender: MqttLink,
    topic: str,
    event: TriggerEvent,
    message: bytes,
    timeout_s: float,
) -> TriggerReceipt | None:
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        receipt = await watcher.receipt(event.event_id, min(RESEND_EVERY_S, left))
        if receipt is not None or deadline - time.monotonic() <= 0:
            return receipt
        with contextlib.suppress(LinkDown):
            await sender.publish(topic, message, qos=1, wait_s=deadline - time.monotonic())
    return None


@app.command()
def tail(
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
    unit: Annotated[str | None, typer.Option("--unit", help="Only this unit")] = None,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = DEFAULT_PREFIX,
    wide: WideOpt = False,
) -> None:
    """Watch activations live, as dispatch sees them (the terminal's width: columns that do
    not fit are left out, never the activation id; --wide shows them all)."""
    from mesh.dispatch.render import activation_table
    from mesh.dispatch.watch import ActivationWatcher

    logs.configure("console", "warning")
    topics = _topics(prefix)
    url = _reachable(_client_broker(broker))

    console = table_console(wide=wide, soft_wrap=False)
    width = fit_width(console)

    def emit(record: ActivationRecord) -> None:
        sys.stdout.write(record.model_dump_json() + "\n")
        sys.stdout.flush()

    def emit_row(record: ActivationRecord) -> None:
        # Not a terminal: no live screen to redraw, so each update is a table of its own.
        console.print(activation_table([record], title=None, width=None))

    async def watch() -> None:
        watcher = ActivationWatcher(
            url,
            topics,
            client_id=f"tm-tail-{uuid.uuid4().hex[:8]}",
            unit_id=unit,
            on_record=emit if json_out else None if console.is_terminal else emit_row,
        )
        if json_out or not console.is_terminal:
            await watcher.run()
            return
        from rich.live import Live

        console.print(f"watching activations on {url} (prefix {prefix}); Ctrl-C to stop")
        task = asyncio.create_task(watcher.run())
        try:
            with Live(
                activation_table([], width=width), console=console, refresh_per_second=4
            ) as screen:
                while True:
                    await asyncio.sleep(0.25)
                    latest = list(watcher.records.values())[-30:]
                    screen.update(activation_table(latest, width=width))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    _run(watch())


# --- dispatch console -----------------------------------------------------------------------
ENV_PASSWORD = "TRIGGER_MESH_PASSWORD"  # noqa: S105 (the variable's name, not a password)
ENV_TLS_KEY_PASSWORD = "TRIGGER_MESH_TLS_KEY_PASSWORD"  # noqa: S105 (likewise)
UsersOpt = Annotated[Path, typer.Option("--users", help="Users file (dispatch-user writes it)")]


@app.command()
def dispatch(
    users: UsersOpt,
    broker: BrokerOpt = None,
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8080,
    host: Annotated[str, typer.Option("--host", help="Address to serve on")] = "127.0.0.1",
    prefix: PrefixOpt = DEFAULT_PREFIX,
    log_format: LogFormatOpt = "auto",
    log_level: LogLevelOpt = "info",
    signing_key: SigningKeyOpt = None,
    allowed_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-origin",
            help="Another origin the page is served from (a reverse proxy's "
            "https://dispatch.example.org); repeat for more",
        ),
    ] = None,
    max_cameras: Annotated[
        int,
        typer.Option("--max-cameras", min=1, help="Cameras kept; past it the least recent goes"),
    ] = 10_000,
    camera_expiry: Annotated[
        float,
        typer.Option(
            "--camera-expiry", min=1, help="Seconds unheard after which a camera is dropped"
        ),
    ] = 86_400.0,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", help="Serve HTTPS with this PEM certificate (chain)"),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="The PEM private key of --tls-cert")
    ] = None,
    tls_key_password: Annotated[
        str | None,
        typer.Option(
            "--tls-key-password",
            envvar=ENV_TLS_KEY_PASSWORD,
            help=f"The password of an encrypted --tls-key (better: env {ENV_TLS_KEY_PASSWORD})",
        ),
    ] = None,
    map_tiles: Annotated[
        str | None,
        typer.Option(
            "--map-tiles",
            help="Basemap tile URL template of your own tile server, "
            "https://tiles.example/{z}/{x}/{y}.png (default: no basemap, nothing fetched)",
        ),
    ] = None,
    map_attribution: Annotated[
        str, typer.Option("--map-attribution", help="Credit shown on the basemap")
    ] = "",
) -> None:
    """Serve the dispatch console: live activations, cameras, escalations, remote activation."""
    _configure_logs(log_format, log_level)  # first: a bad option or file is a log record
    require("console", "trigger-mesh dispatch")
    from mesh.dispatch.console.auth import Users
    from mesh.dispatch.console.server import ConsoleServer
    from mesh.dispatch.console.state import CameraLimits
    from mesh.dispatch.console.tiles import tile_origin
    from mesh.dispatch.console.tls import TlsError, TlsFiles, check_tls

    try:
        known = Users.load(users)
    except ConfigError as exc:
        _fail_config(exc)
    tls = None
    if (tls_cert is None) != (tls_key is None):
        _fail("give both --tls-cert and --tls-key, or neither")
    if tls_cert is not None and tls_key is not None:
        tls = TlsFiles(tls_cert, tls_key, tls_key_password)
        try:
            check_tls(tls)
        except TlsError as exc:
            _fail(str(exc))
    if map_tiles is not None:
        try:
            tile_origin(map_tiles)
        except ValueError as exc:
            _fail(str(exc))
    signer = load_signer(signing_key)
    topics = _topics(prefix)

    async def serve() -> None:
        async with _broker_for(_client_broker(broker)) as (url, protocol):
            try:
                server = ConsoleServer(
                    url,
                    topics,
                    known,
                    host=host,
                    port=port,
                    protocol=protocol,
                    signer=signer,
                    allowed_origins=tuple(allowed_origin or ()),
                    camera_limits=CameraLimits(max_cameras, camera_expiry),
                    tls=tls,
                    map_tiles=map_tiles,
                    map_attribution=map_attribution,
                )
            except OSError as exc:
                _fail(
                    f"cannot serve on {host}:{port}: {exc.strerror}", listen_failure_code(exc.errno)
                )
            # A log record, not a print: stderr holds one format (docs/observability.md).
            structlog.get_logger("mesh.console").info(
                "dispatch console serving",
                url=f"{server.scheme}://{host}:{server.port}/",
                broker=str(url),
                prefix=prefix,
            )
            await server.run()

    _run(serve())


@app.command("dispatch-user")
def dispatch_user(
    users: UsersOpt,
    name: Annotated[str, typer.Option("--name")],
    role: Annotated[str, typer.Option("--role", help="viewer or dispatcher")] = "dispatcher",
) -> None:
    """Add or replace a console user. The password comes from TRIGGER_MESH_PASSWORD, or a
    prompt."""
    from mesh.dispatch.console.auth import Role, add_user

    try:
        chosen = Role(role)
    except ValueError:
        _fail(f"--role must be viewer or dispatcher, not {role!r}")
    password = os.environ.get(ENV_PASSWORD)
    if password is None:
        if not sys.stdin.isatty():
            _fail(f"no terminal to ask for a password: set {ENV_PASSWORD}")
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            _fail("the passwords differ")
    if len(password) < 8:
        _fail("the password must have at least 8 characters")
    try:
        add_user(users, name, chosen, password)
    except (ConfigError, ValueError) as exc:
        _fail(f"cannot add {name!r} to {users}: {exc}")
    _console().print(f"{name} ({chosen.value}) written to {users}", highlight=False)


# --- BLE sensors ----------------------------------------------------------------------------
@app.command("ble-sensor")
def ble_sensor(
    key_file: Annotated[Path, typer.Option("--key-file", help="From `keys new-sensor`")],
    event: Annotated[
        str,
        typer.Option(
            "--event",
            help="draw, holstered, arm, safe, trigger_pull, arc, rack_unlock, down, input_on, …",
        ),
    ],
    transport: Annotated[
        str,
        typer.Option(
            "--transport",
            help="HCI transport: usb:0, serial:/dev/ttyACM0, hci-socket:0, or "
            "tcp-client:HOST:PORT of a `trigger-mesh ble-radio`",
        ),
    ],
    kind: Annotated[str | None, typer.Option("--kind", help="Checked against the key file")] = None,
    sensor_id: Annotated[
        int | None, typer.Option("--sensor-id", help="Checked against the key file")
    ] = None,
    duration_s: Annotated[
        float, typer.Option("--duration", help="Seconds to repeat the advert")
    ] = 2.0,
    interval_ms: Annotated[int, typer.Option("--interval-ms", min=20, max=10240)] = 20,
    battery: Annotated[int, typer.Option("--battery", min=0, max=100)] = 90,
) -> None:
    """Advertise one sensor event like a real sensor: counter + 1, repeated for a while."""
    require("bumble", "trigger-mesh ble-sensor")
    from triggers.ble.format import SensorEvent
    from triggers.ble.keystore import KeystoreError, SensorKeyFile, kind_from_name

    _configure_logs("console", "warning")
    try:
        keys = SensorKeyFile.load(key_file)
        if kind is not None and kind_from_name(kind) is not keys.kind:
            _fail(f"--kind {kind} does not match the key file ({keys.kind.name.lower()})")
    except KeystoreError as exc:
        _fail(str(exc))
    if sensor_id is not None and sensor_id != keys.sensor_id:
        _fail(f"--sensor-id {sensor_id} does not match the key file ({keys.sensor_id})")
    try:
        sensor_event = SensorEvent[event.upper()]
    except KeyError:
        _fail(f"unknown event {event!r}: {', '.join(e.name.lower() for e in SensorEvent)}")

    async def advertise() -> None:
        from bumble.device import Device
        from bumble.transport import open_transport

        from triggers.ble.bumble_backend import random_static_address
        from triggers.ble.sensor import SimulatedSensor

        async with await open_transport(transport) as hci:
            device = Device.with_hci(
                "trigger-mesh-sensor", random_static_address(), hci.source, hci.sink
            )
            await device.power_on()
            sensor = SimulatedSensor(device, keys, key_path=key_file, battery_pct=battery)
            advert = await sensor.emit(sensor_event, duration_s=duration_s, interval_ms=interval_ms)
        _console().print(
            f"sensor {advert.sensor_id}: {sensor_event.name.lower()} "
            f"(counter {advert.counter}) advertised for {duration_s:g} s "
            f"via {transport}",
            highlight=False,
        )

    _run(advertise())


@app.command("ble-radio")
def ble_radio(
    port: Annotated[int, typer.Option("--port", help="First TCP port")] = 7400,
    controllers: Annotated[int, typer.Option("--controllers", min=2, max=64)] = 4,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
) -> None:
    """A virtual BLE radio for several processes: N controllers on one virtual link, each
    an HCI transport on TCP (connect gateways and sensors with tcp-client:HOST:PORT)."""
    require("bumble", "trigger-mesh ble-radio")
    from triggers.ble.virtual import serve_radio

    _configure_logs("console", "warning")
    specs = [f"tcp-server:{host}:{port + i}" for i in range(controllers)]
    _console(stderr=True).print(
        "virtual radio up; attach with "
        + ", ".join(f"tcp-client:{host}:{port + i}" for i in range(controllers)),
        highlight=False,
    )
    _run(serve_radio(specs))


# --- CAN ----------------------------------------------------------------------------------
DbcOpt = Annotated[list[Path], typer.Option("--dbc", help="DBC file (repeatable)")]


def _parse_bus(spec: str) -> tuple[str, str]:
    interface, _, channel = spec.partition(":")
    if not interface or not channel:
        _fail(
            f"--bus {spec!r}: expected INTERFACE:CHANNEL, e.g. virtual:demo, socketcan:vcan0, "
            "udp_multicast:239.74.163.2"
        )
    return interface, channel


def _parse_bus_options(items: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            _fail(f"--bus-opt {item!r}: expected KEY=VALUE, e.g. port=43200")
        # YAML scalars, as in a config's can.options: 43200 is an int, true a bool.
        options[key.strip()] = yaml.safe_load(raw)
    return options


@app.command("can-replay")
def can_replay(
    log: Annotated[Path, typer.Argument(help="A capture: candump -L .log, .asc, .blf, .trc …")],
    dbc: DbcOpt,
    rules: Annotated[Path, typer.Option("--rules", help="Rules YAML")],
    realtime: Annotated[bool, typer.Option("--realtime", help="At the recorded speed")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per trigger")] = False,
) -> None:
    """Run a recorded drive through the rules: which triggers fire, at which log time."""
    require("can", "trigger-mesh can-replay")
    from mesh.dispatch.literal import literal
    from triggers.can.engine import Fired
    from triggers.can.factory import build_engine
    from triggers.can.replay import replay
    from triggers.can.rules import RulesError

    try:
        engine = build_engine(rules, dbc)
    except RulesError as exc:
        _fail(str(exc))
    if not log.is_file():
        _fail(f"{log}: no such log")
    err = _console(stderr=True)
    fired = 0
    try:
        for item in replay(log, engine, realtime=realtime):
            if isinstance(item, Fired):
                fired += 1
                if json_out:
                    print(
                        json.dumps(
                            {
                                "kind": item.kind.value,
                                "rule": item.rule,
                                "t": item.t,
                                "value": item.value,
                                "signal": item.where,
                                "frame_id": f"0x{item.frame_id:X}",
                            }
                        ),
                        flush=True,
                    )
                else:
                    print(
                        f"{item.t:.6f}  {item.kind.value:<17} {item.rule:<24} "
                        f"{item.where} = {item.value}",
                        flush=True,
                    )
            else:
                err.print(
                    literal(
                        (f"{item.t:.6f}  {item.event}", "yellow"), f" {item.rule}: {item.detail}"
                    )
                )
    except BrokenPipeError:
        raise  # the reader left (| head): click exits quietly
    except (ValueError, OSError) as exc:
        _fail(f"{log}: cannot read the capture: {exc}")
    counts = dict(engine.counters)
    others = ", ".join(
        f"{k} {v}" for k, v in sorted(counts.items()) if k not in ("frames", "fired")
    )
    err.print(
        f"{counts.get('frames', 0)} frames, {fired} triggers fired"
        + (f"; {others}" if others else ""),
        highlight=False,
    )


@app.command("vehicle-sim")
def vehicle_sim(
    dbc: DbcOpt,
    scenario: Annotated[Path, typer.Option("--scenario", help="Scenario YAML")],
    bus: Annotated[
        str | None,
        typer.Option(
            "--bus",
            help="INTERFACE:CHANNEL to send on, e.g. udp_multicast:239.74.163.2 or socketcan:vcan0",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write a capture instead (.log …)")
    ] = None,
    bus_opts: Annotated[
        list[str] | None,
        typer.Option(
            "--bus-opt",
            help="KEY=VALUE for python-can's Bus, repeatable: port=43200, bitrate=500000",
        ),
    ] = None,
    speed: Annotated[float, typer.Option("--speed", help="> 1 plays faster")] = 1.0,
) -> None:
    """Play a vehicle: DBC messages at their cycle times following a scenario, mixed with
    background traffic, onto a CAN bus or into a capture file."""
    require("can", "trigger-mesh vehicle-sim")
    from triggers.can.factory import load_databases
    from triggers.can.rules import RulesError
    from triggers.can.simulator import (
        ScenarioError,
        VehicleSimulator,
        load_scenario,
        play,
        write_log,
    )

    if (bus is None) == (out is None):
        _fail("give one of --bus (send live) or --out (write a capture)")
    try:
        sim = VehicleSimulator(
            load_scenario(scenario), load_databases(dbc), base_dir=scenario.parent
        )
    except (ScenarioError, RulesError) as exc:
        _fail(str(exc))
    err = _console(stderr=True)
    import can

    # Frames are made as they go out: a step that cannot be encoded, or a background
    # capture that cannot be read, shows up here rather than at load.
    try:
        if out is not None:
            count = write_log(sim.frames(), out, start_time=time.time())
            err.print(f"{count} frames written to {out}", highlight=False)
            return
        assert bus is not None
        interface, channel = _parse_bus(bus)
        options = _parse_bus_options(bus_opts or [])

        async def send() -> None:
            with can.Bus(interface=interface, channel=channel, **options) as handle:
                sent = await play(sim.frames(), handle, speed=speed)
            err.print(f"{sent} frames sent on {bus}", highlight=False)

        _run(send())
    except (ScenarioError, OSError, can.CanError, ValueError) as exc:
        _fail(f"vehicle-sim: {exc}")


@app.command("can-diff")
def can_diff(
    baseline: Annotated[Path, typer.Argument(help="Capture at rest (or the only capture)")],
    event: Annotated[Path | None, typer.Argument(help="Capture while it happens")] = None,
    split_at: Annotated[
        float | None,
        typer.Option(
            "--split-at", help="One capture: seconds from its start where the event begins"
        ),
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1)] = 15,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Find raw-bit rule candidates: bits constant at rest that change with the event."""
    require("can", "trigger-mesh can-diff")
    import can

    from triggers.can.diff import find_candidates, split

    if (event is None) == (split_at is None):
        _fail("give a second capture, or --split-at SECONDS to split one")
    try:
        first = list(can.LogReader(str(baseline)))
        if event is not None:
            base, changed = first, list(can.LogReader(str(event)))
        else:
            assert split_at is not None
            base, changed = split(first, split_at)
    except (ValueError, OSError) as exc:
        _fail(f"cannot read the capture: {exc}")
    found = find_candidates(base, changed)[:top]
    if json_out:
        for c in found:
            print(
                json.dumps(
                    {
                        "frame_id": f"0x{c.frame_id:X}",
                        "byte": c.byte,
                        "bit": c.bit,
                        "baseline": c.baseline_value,
                        "changes_at_s": c.transitions,
                        "alongside": c.alongside,
                        "rule": c.rule,
                    }
                )
            )
        return
    # "others": how many other bits of the frame flipped at the same moment (0 is cleanest).
    print(f"{'frame':>10} {'byte':>4} {'bit':>3} {'at rest':>7} {'others':>6}  changes at (s)")
    for c in found:
        times = ", ".join(f"{t:.3f}" for t in c.transitions[:6]) or "(changed before the event)"
        frame = f"0x{c.frame_id:X}"
        print(f"{frame:>10} {c.byte:>4} {c.bit:>3} {c.baseline_value:>7} {c.alongside:>6}  {times}")


# --- log and schema -----------------------------------------------------------------------
@log_app.command("export")
def log_export(
    log: Annotated[Path, typer.Argument(help="Activation log (SQLite)")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
    out: Annotated[Path | None, typer.Option("--out", help="File (default stdout)")] = None,
) -> None:
    """Export every record of an activation log, in order."""
    from mesh.journal.export import export
    from mesh.journal.store import LogError

    if fmt not in ("jsonl", "csv"):
        _fail(f"--format must be jsonl or csv, not {fmt!r}")
    try:
        if out is None:
            count = export(log, fmt, sys.stdout)  # type: ignore[arg-type]
        else:
            with out.open("w", newline="") as handle:
                count = export(log, fmt, handle)  # type: ignore[arg-type]
    except LogError as exc:
        _fail(str(exc))
    _console(stderr=True).print(f"{count} records exported", highlight=False)


@app.command()
def schema(
    out: Annotated[Path, typer.Option("--out", help="Directory for the .schema.json files")],
) -> None:
    """Write the JSON Schema of every protocol v2 payload, of the signed-message envelope
    (jws), of the trust store file, and of a recording's evidence manifest."""
    from mesh.camera.recording.manifest import write_manifest_schema
    from mesh.protocol.schema import write_schemas
    from mesh.security.trust import write_trust_store_schema

    for path in [*write_schemas(out), write_trust_store_schema(out), write_manifest_schema(out)]:
        _console().print(str(path), highlight=False)


@app.command("console-openapi")
def console_openapi(
    out: Annotated[Path, typer.Option("--out", help="The file to write (JSON)")],
) -> None:
    """Write the OpenAPI 3.1 document of the dispatch console's HTTP API
    (docs/console-openapi.json; the console serves it at /openapi.json)."""
    from mesh.dispatch.console.openapi import write_openapi

    _console().print(str(write_openapi(out)), highlight=False)


@app.command()
def asyncapi(
    out: Annotated[Path, typer.Option("--out", help="The AsyncAPI file to write (YAML)")],
    prefix: PrefixOpt = DEFAULT_PREFIX,
) -> None:
    """Write the AsyncAPI 3.0 document of every topic and payload (docs/asyncapi.yaml)."""
    from mesh.protocol.asyncapi import write_asyncapi

    try:
        path = write_asyncapi(out, prefix)
    except ValueError as exc:  # a prefix that is no topic prefix
        _fail(str(exc))
    _console().print(str(path), highlight=False)


@app.command()
def vectors(
    out: Annotated[Path, typer.Option("--out", help="Directory for the .json files")],
) -> None:
    """Write the protocol's test vectors (geo cells, range decisions, signed messages,
    recording manifests): docs/vectors."""
    import json

    from mesh.camera.recording.vectors import manifest_vectors
    from mesh.decide.vectors import all_vectors
    from mesh.security.vectors import VECTOR_FILES

    out.mkdir(parents=True, exist_ok=True)
    written = {
        **all_vectors(),
        **{name: make() for name, make in VECTOR_FILES.items()},
        "recording-manifest": manifest_vectors(),
    }
    for name, content in written.items():
        path = out / f"{name}.json"
        path.write_text(json.dumps(content, indent=2) + "\n")
        _console().print(str(path), highlight=False)


_register_groups()
