"""The NATS central tier's generated files (bridge/broker/nats.py, docs/broker.md § A NATS
central tier): subjects, users, node configs and the car's bridge to the cluster. The
servers themselves run in tests/integration/test_nats_cluster.py."""

from __future__ import annotations

import dataclasses
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from bridge.broker.acl import FleetSpec, Principal
from bridge.broker.bridge import parse_bridge_spec, render_bridge
from bridge.broker.nats import (
    ADMIN_USER,
    BCRYPT_COST,
    MAX_CONSUMERS,
    MQTT_DELIVERY,
    NatsConfigError,
    NatsNode,
    central_users,
    cluster_nodes,
    mqtt_subjects,
    nats_bridge,
    password_hash,
    render_node,
    subject_topic,
    write_car_and_central,
)
from bridge.broker.pki import CertPair

FLEET = FleetSpec(
    prefix="mesh/v2",
    gateways=(Principal("gw-car-12", "car-12"),),
    cameras=(Principal("dash-12", "car-12"),),
    dispatch=("dispatch-1",),
    archivers=("archiver-1",),
)
NODES = (
    NatsNode("nats-1", "10.0.0.1"),
    NatsNode("nats-2", "10.0.0.2"),
    NatsNode("nats-3", "10.0.0.3"),
)


@pytest.mark.parametrize(
    ("topic", "subjects"),
    [
        ("mesh/v2/trigger/car-12", ("mesh.v2.trigger.car-12",)),
        ("mesh/v2/ack/+/+", ("mesh.v2.ack.*.*",)),
        ("mesh/v2/#", ("mesh.v2", "mesh.v2.>")),
        ("mesh/v2/presence/cam.1", ("mesh.v2.presence.cam//1",)),
    ],
)
def test_topics_become_the_servers_subjects(topic: str, subjects: tuple[str, ...]) -> None:
    assert mqtt_subjects(topic) == subjects


@pytest.mark.parametrize(
    ("topic", "subject"),
    [
        ("mesh/v2/trigger/car-12", "mesh.v2.trigger.car-12"),
        ("mesh/v2/ack/gw.1/cam.2", "mesh.v2.ack.gw//1.cam//2"),
        ("/sensors/temp", "/.sensors.temp"),
        ("sensors/temp/", "sensors.temp./"),
        ("sensors//temp", "sensors./.temp"),
        ("a/../b", "a.////.b"),
    ],
)
def test_subjects_map_back_to_their_topics(topic: str, subject: str) -> None:
    """nats-server's conversion (docs.nats.io, MQTT topics and subjects) and its inverse."""
    if "//" not in topic and not topic.startswith("/") and not topic.endswith("/"):
        assert mqtt_subjects(topic) == (subject,)
    assert subject_topic(subject) == topic


@pytest.mark.parametrize("bad", ["mesh//v2", "mesh/#/x", "mesh/a+"])
def test_odd_topics_are_refused(bad: str) -> None:
    with pytest.raises(NatsConfigError):
        mqtt_subjects(bad)


def test_users_mirror_the_acl() -> None:
    bridge = nats_bridge("central", FLEET, NODES, ca_file=Path("/etc/tm/ca.crt"), password="pw")
    users = {u.name: u for u in central_users(FLEET, (bridge,))}
    assert users[ADMIN_USER].unrestricted
    assert users[ADMIN_USER].connection_types == ("STANDARD",)
    dispatch = users["dispatch-1"]
    assert dispatch.subscribe == ("mesh.v2", "mesh.v2.>")
    assert dispatch.publish == ("mesh.v2.trigger.*", "mesh.v2.cancel.*")
    archiver = users["archiver-1"]
    # The archive's consumer only (fetch, info, acks) and the watermarks; no stream's
    # subjects, no stream or consumer management; replies only on its own inbox.
    assert archiver.publish == (
        "$JS.API.CONSUMER.MSG.NEXT.MESH_ARCHIVE.archivers",
        "$JS.API.CONSUMER.INFO.MESH_ARCHIVE.archivers",
        "$JS.ACK.MESH_ARCHIVE.archivers.>",
        "mesh.v2.log.*.synced.*",
    )
    assert archiver.subscribe == ("_INBOX.archiver-1.>",)
    assert not archiver.mqtt_subscribes  # so not $MQTT.sub.> either
    car = users["tm-bridge-gw-car-12-central"]
    assert car.connection_types == ("MQTT",)
    # Out: what the car sends; in: what it is sent; both: the trigger, cells, cmd/all.
    assert "mesh.v2.activation.car-12.*" in car.publish
    assert "mesh.v2.activation.car-12.*" not in car.subscribe
    assert "mesh.v2.cancel.car-12" in car.subscribe
    assert "mesh.v2.cancel.car-12" not in car.publish
    assert "mesh.v2.trigger.car-12" in set(car.publish) & set(car.subscribe)
    # Another unit's triggers do not come in; no geo cell crosses the bridge.
    assert "mesh.v2.trigger.*" not in car.subscribe
    assert not any(".cmd.cell." in s for s in (*car.publish, *car.subscribe))
    # The cell relay: any cell out; in, every cell here (the camera has no region).
    relay = users["tm-relay-gw-car-12"]
    assert relay.connection_types == ("MQTT",)
    assert relay.publish == ("mesh.v2.cmd.cell.*",)
    assert relay.subscribe == ("mesh.v2.cmd.cell.*",)


def test_a_relay_reads_its_cameras_region_only() -> None:
    fleet = dataclasses.replace(FLEET, camera_cells=("dr5ru",))
    bridge = nats_bridge("central", fleet, NODES, ca_file=Path("/etc/tm/ca.crt"), password="pw")
    relay = {u.name: u for u in central_users(fleet, (bridge,))}["tm-relay-gw-car-12"]
    assert len(relay.subscribe) == 32
    assert all(s.startswith("mesh.v2.cmd.cell.dr5ru") for s in relay.subscribe)
    assert relay.publish == ("mesh.v2.cmd.cell.*",)


def test_cluster_nodes_one_host_or_one_each() -> None:
    same = cluster_nodes(["central.example"])
    assert [n.client_port for n in same] == [4222, 4223, 4224]
    assert [n.mqtt_port for n in same] == [8883, 8884, 8885]
    assert {n.host for n in same} == {"central.example"}
    each = cluster_nodes(["a", "b", "c"])
    assert [(n.name, n.host, n.mqtt_port) for n in each] == [
        ("nats-1", "a", 8883),
        ("nats-2", "b", 8883),
        ("nats-3", "c", 8883),
    ]
    with pytest.raises(NatsConfigError):
        cluster_nodes(["a", "b"])


def test_the_car_bridge_lists_every_node_and_is_a_plain_client() -> None:
    bridge = nats_bridge("central", FLEET, NODES, ca_file=Path("/etc/tm/ca.crt"), password="pw")
    conf = render_bridge(bridge, FLEET)
    assert "address 10.0.0.1:8883 10.0.0.2:8883 10.0.0.3:8883\n" in conf
    assert "round_robin true\n" in conf
    assert "try_private false\n" in conf
    assert "try_private true" not in conf
    assert "remote_username tm-bridge-gw-car-12-central\nremote_password pw\n" in conf
    assert "bridge_cafile /etc/tm/ca.crt\n" in conf
    # Loops are prevented by direction, as with a mosquitto central. What comes in comes
    # at QoS 0: no JetStream consumer per filter at central; what goes out at QoS 1, a
    # "both" topic as one line each way.
    assert "topic mesh/v2/cancel/car-12 in 0\n" in conf
    assert "topic mesh/v2/receipt/car-12 out 1\n" in conf
    assert "topic mesh/v2/trigger/car-12 out 1\ntopic mesh/v2/trigger/car-12 in 0\n" in conf
    assert " in 1\n" not in conf
    assert " both " not in conf
    # A mosquitto central keeps the bridge flag and one address.
    plain = render_bridge(parse_bridge_spec("c=mqtt://central:1883"), FLEET)
    assert "try_private true\n" in plain
    assert "topic mesh/v2/cancel/car-12 in 1\n" in plain
    assert "topic mesh/v2/trigger/car-12 both 1\n" in plain
    assert "round_robin" not in plain
    assert "address central:1883\n" in plain


def test_written_next_to_the_car_with_one_ca(tmp_path: Path) -> None:
    done = write_car_and_central(tmp_path / "car", FLEET, NODES, run_as="root", port=18883)
    central = done.central
    assert central.out_dir == (tmp_path / "car" / "central").resolve()
    assert central.ca_cert.read_bytes() == done.car.ca_cert.read_bytes()
    # The nodes' certificate is issued by the car's CA, for every node's address.
    ca = x509.load_pem_x509_certificate(done.car.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate((central.out_dir / "server" / "nats.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {x509.OID_SERVER_AUTH, x509.OID_CLIENT_AUTH}  # routes: both ends
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} >= {
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
    }
    car_conf = done.car.conf.read_text()
    password = central.password("tm-bridge-gw-car-12-central")
    assert f"remote_password {password}\n" in car_conf
    assert "address 10.0.0.1:8883 10.0.0.2:8883 10.0.0.3:8883\n" in car_conf
    # Secrets: the car's conf (the bridge's password), the nodes' confs, the passwords.
    for path in (done.car.conf, *central.confs.values(), *central.credentials.values()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for node in NODES:
        text = central.confs[node.name].read_text()
        assert f'server_name: "{node.name}"' in text
        assert f'store_dir: "{central.store_dirs[node.name]}"' in text
        others = [n for n in NODES if n != node]
        for other in others:
            assert f"@{other.host}:{other.cluster_port}" in text
        assert f"@{node.host}:{node.cluster_port}" not in text
        assert "mqtt {" in text
        assert "stream_replicas: 3" in text
        assert text.count("tls {") == 3  # clients, routes, MQTT
        assert f'"{MQTT_DELIVERY}"' in text
        assert f"jetstream {{\n      max_consumers: {MAX_CONSUMERS}\n    }}" in text
    assert len(set(central.store_dirs.values())) == 3


def test_node_configs_hold_hashes_not_passwords(tmp_path: Path) -> None:
    """Each user's bcrypt hash (the same in every node's config) checks against the password
    in its credentials file, which is in no config. The server's check, and logins with
    the hash, are in tests/integration/test_nats_auth.py."""
    import bcrypt

    central = write_car_and_central(tmp_path / "car", FLEET, NODES, run_as="root").central
    hashes: list[dict[str, str]] = []
    for conf in central.confs.values():
        text = conf.read_text()
        pairs = re.findall(r'user: "([^"]+)"\n\s+password: "([^"]+)"', text)
        hashes.append(dict(pairs))
        for user in central.users:
            assert central.password(user.name) not in text
    assert all(h == hashes[0] for h in hashes)
    assert set(hashes[0]) == {u.name for u in central.users} | {"route"}
    for user in central.users:
        hashed = hashes[0][user.name]
        assert hashed.startswith(f"$2b${BCRYPT_COST:02d}$")
        assert bcrypt.checkpw(central.password(user.name).encode(), hashed.encode())


def test_a_plain_password_is_not_rendered(tmp_path: Path) -> None:
    """nats-server compares anything but a bcrypt hash as plain text: render_node takes
    hashes only."""
    users = central_users(FLEET)
    hashed = password_hash("pw")

    def render(user_hash: str, route_hash: str) -> str:
        return render_node(
            NODES[0],
            NODES,
            store_dir=tmp_path / "js",
            log_file=tmp_path / "nats.log",
            ca=tmp_path / "ca.crt",
            server=CertPair(tmp_path / "s.crt", tmp_path / "s.key"),
            users=users,
            password_hashes={u.name: user_hash for u in users},
            route_password="pw",
            route_password_hash=route_hash,
        )

    assert render(hashed, hashed).count(hashed) == len(users) + 1
    for user_hash, route_hash in (("pw", hashed), (hashed, "pw")):
        with pytest.raises(NatsConfigError, match="bcrypt hashes"):
            render(user_hash, route_hash)
    # bcrypt reads 72 bytes: a longer password would be cut short, so it is refused.
    with pytest.raises(NatsConfigError, match="72 bytes"):
        password_hash("x" * 73)


def test_cli_writes_the_cluster_beside_the_car(tmp_path: Path) -> None:
    from mesh.cli.app import app

    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "prefix: mesh/v2\n"
        "gateways: [{id: gw-car-12, unit: car-12}]\n"
        "cameras: [{id: dash-12, unit: car-12}]\n"
        "dispatch: [dispatch-1]\n"
        "archivers: [archiver-1]\n"
    )
    out = tmp_path / "car"
    args = ["broker-config", "--out", str(out), "--fleet", str(fleet), "--run-as", "root"]
    result = CliRunner().invoke(app, [*args, "--central", "nats", "--central-host", "c.example"])
    assert result.exit_code == 0, result.output
    for name in ("nats-1", "nats-2", "nats-3"):
        assert (out / "central" / f"{name}.conf").is_file()
    assert (
        "address c.example:8883 c.example:8884 c.example:8885"
        in (out / "mosquitto.conf").read_text()
    )
    bad = CliRunner().invoke(app, [*args, "--force", "--central", "kafka"])
    assert bad.exit_code == 2
    # Client certificates at central: the bridge's beside the car's conf, no passwords.
    certs = [*args, "--force", "--central", "nats", "--central-auth", "cert"]
    result = CliRunner().invoke(app, certs)
    assert result.exit_code == 0, result.output
    bridge_key = out / "bridges" / "tm-bridge-gw-car-12-central.key"
    car_conf = (out / "mosquitto.conf").read_text()
    assert f"bridge_keyfile {bridge_key}\n" in car_conf
    assert "remote_password" not in car_conf
    assert "verify_and_map: true" in (out / "central" / "nats-1.conf").read_text()
    assert (out / "central" / "credentials" / "dispatch-1.crt").is_file()
    for bad_args in ([*certs[:-1], "token"], [*args, "--force", "--central-auth", "cert"]):
        assert CliRunner().invoke(app, bad_args).exit_code == 2
