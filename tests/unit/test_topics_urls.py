"""Topic schema and broker URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.mqtt.urls import BrokerUrl, TlsFileError
from bridge.topics import TopicKind, Topics


def test_topics_build_and_parse_round_trip() -> None:
    t = Topics("fleet/a/mesh/v2")
    cases = {
        t.trigger("car-12"): (TopicKind.TRIGGER, ("car-12",)),
        t.command_all(): (TopicKind.COMMAND_ALL, ()),
        t.command_camera("bwc-1"): (TopicKind.COMMAND_CAMERA, ("bwc-1",)),
        t.ack("gw-car-12", "bwc-1"): (TopicKind.ACK, ("gw-car-12", "bwc-1")),
        t.activation("car-12", "a-1"): (TopicKind.ACTIVATION, ("car-12", "a-1")),
        t.receipt("car-12"): (TopicKind.RECEIPT, ("car-12",)),
        t.presence("bwc-1"): (TopicKind.PRESENCE, ("bwc-1",)),
        t.gateway("gw-car-12"): (TopicKind.GATEWAY, ("gw-car-12",)),
    }
    for topic, (kind, args) in cases.items():
        parsed = t.parse(topic)
        assert parsed is not None, topic
        assert (parsed.kind, parsed.args) == (kind, args)


def test_topics_outside_the_prefix_or_schema_are_not_ours() -> None:
    t = Topics()
    assert t.parse("other/v1/cmd/all") is None
    assert t.parse("mesh/v2/cmd/all/extra") is None
    assert t.parse("mesh/v2/unknown/x") is None


@pytest.mark.parametrize("prefix", ["", "/mesh", "mesh/", "mesh/+/v1", "mesh/#", "a//b"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="topic prefix"):
        Topics(prefix)


def test_broker_urls() -> None:
    url = BrokerUrl.parse("mqtts://gw:s%40cret@broker.example:8884?ca=/etc/ca.pem")
    assert (url.scheme, url.host, url.port) == ("mqtts", "broker.example", 8884)
    assert (url.username, url.password, url.ca_file) == ("gw", "s@cret", "/etc/ca.pem")
    assert BrokerUrl.parse("mqtt://127.0.0.1").port == 1883
    assert BrokerUrl.parse("mqtts://h").port == 8883
    assert str(BrokerUrl.parse("mqtt://u:p@h:1")) == "mqtt://u@h:1"  # no password in logs


def test_a_url_may_name_the_nodes_of_a_cluster() -> None:
    text = "mqtts://gw:s%40cret@n1:8884,n2,[::1]:9000?ca=/etc/ca.pem"
    url = BrokerUrl.parse(text)
    # One scheme, one credential, one set of TLS files; the nodes in the order given.
    assert url.addresses == (("n1", 8884), ("n2", 8883), ("::1", 9000))
    assert (url.username, url.password, url.ca_file) == ("gw", "s@cret", "/etc/ca.pem")
    assert str(url) == "mqtts://gw@n1:8884,n2:8883,[::1]:9000"
    assert BrokerUrl.parse(url.as_text()) == url
    assert url.at(2) == BrokerUrl("mqtts", "::1", 9000, "gw", "s@cret", "/etc/ca.pem")
    assert BrokerUrl.parse("mqtt://h").addresses == (("h", 1883),)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("mqtt://gw:s3cr3t@a,b:x", "host 'b:x': port is not a number"),
        ("mqtt://gw:s3cr3t@a,b:0", "host 'b:0' is not host"),
        ("mqtt://gw:s3cr3t@a,,b", "host '' is not host"),
        ("mqtt://gw:s3cr3t@" + ",".join(["h"] * 17), "more than 16 hosts"),
    ],
)
def test_bad_host_lists_say_which_host(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as caught:
        BrokerUrl.parse(text)
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("http://h", "scheme"),
        ("mqtt://", "no host"),
        ("mqtt://h:99999", "port"),
        ("mqtt://h/path", "path"),
        ("mqtt://h?ca=x", "mqtts"),
        ("mqtts://h?bogus=1", "unknown option"),
    ],
)
def test_bad_broker_urls_say_what_is_wrong(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        BrokerUrl.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "mqtt://gw:s3cr3t@h:99999",
        "mqtts://gw:s3cr3t@h/x?ca=/c",
        "ftp://gw:s3cr3t@h",
        "mqtt://gw:s3cr3t@",
    ],
)
def test_errors_about_a_url_never_show_its_password(text: str) -> None:
    with pytest.raises(ValueError, match="gw:\\*\\*\\*@") as caught:
        BrokerUrl.parse(text)
    assert "s3cr3t" not in str(caught.value)


def test_tls_files_that_cannot_be_used_are_named(tmp_path: Path) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    missing = tmp_path / "missing.pem"
    cases = {
        f"mqtts://h?ca={missing}": f"ca={missing}: No such file or directory",
        f"mqtts://h?ca={tmp_path}": f"ca={tmp_path}: Is a directory",
        f"mqtts://h?ca={not_pem}": (
            f"ca={not_pem}: not usable (X509: NO_CERTIFICATE_OR_CRL_FOUND)"
        ),
        f"mqtts://h?cert={not_pem}": f"cert={not_pem}: not usable ([SSL] PEM lib)",
        f"mqtts://h?cert={not_pem}&key={missing}": f"key={missing}: No such file or directory",
    }
    for text, says in cases.items():
        with pytest.raises(TlsFileError) as refused:
            BrokerUrl.parse(text).tls_context()
        assert str(refused.value) == f"broker URL mqtts://h:8883: {says}"
    assert BrokerUrl.parse("mqtt://h").tls_context() is None  # plain: no files, no context


def test_the_probe_s_connect_packet_is_mqtt_3_1_1() -> None:
    """MQTT 3.1.1 section 3.1: fixed header, "MQTT" level 4, flags, keep-alive, then the
    client id, user name and password, each length-prefixed."""
    from bridge.mqtt.probe import connect_packet

    assert connect_packet("c1", keepalive_s=10) == (
        b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x0a\x00\x02c1"
    )
    assert connect_packet("c1", "al", "pw", keepalive_s=10) == (
        b"\x10\x16\x00\x04MQTT\x04\xc2\x00\x0a\x00\x02c1\x00\x02al\x00\x02pw"
    )
    # 3.1.1 allows no password without a user name.
    assert connect_packet("c1", None, "pw", keepalive_s=10) == connect_packet("c1")
    # Past 127 bytes the remaining length takes two bytes (0xC8 0x01 = 200).
    long = connect_packet("c" * 188)
    assert long[1:3] == b"\xc8\x01"
    assert len(long) == 3 + 200
