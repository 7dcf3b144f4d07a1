"""`trigger-mesh archiver --nats …` and `archiver stream`: bad options are refused with exit
status 2 and a message naming what is wrong, before anything connects; and the pure parts of
the JetStream archive (the stream's and the consumer's settings, how much a fetch asks for)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bridge.topics import Topics
from mesh.archive.jetstream import (
    StreamSettings,
    archive_subjects,
    consumer_config,
    delivery_count,
    fetch_count,
    stream_config,
)
from mesh.cli.app import app

pytest.importorskip("nats")
DB = "postgresql://127.0.0.1:1/none"


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--nats", "kafka://x:1", "--nats-user", "a"], "give nats://HOST:PORT or tls://HOST:PORT"),
        (["--nats", "tls://x:4222"], "--nats needs --nats-user"),
        (["--nats", "tls://x:4222", "--nats-user", "a"], "--nats needs --nats-password-file"),
        (["--nats", " , ", "--nats-user", "a"], "--nats: no URL"),
    ],
)
def test_bad_nats_options_are_refused(extra: list[str], says: str) -> None:
    result = CliRunner().invoke(app, ["archiver", "--db", DB, *extra], env={})
    assert result.exit_code == 2, result.output
    assert says in result.output


def test_an_unreadable_or_empty_password_file_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty.password"
    empty.write_text("\n")
    for path, says in ((tmp_path / "missing", "missing"), (empty, "empty")):
        result = CliRunner().invoke(
            app,
            ["archiver", "stream", "--nats", "tls://x:4222", "--nats-password-file", str(path)],
            env={},
        )
        assert result.exit_code == 2, result.output
        assert f"--nats-password-file {path}" in result.output
        assert says in result.output


def test_bad_certificate_options_are_refused(tmp_path: Path) -> None:
    cert, key, password = tmp_path / "a.crt", tmp_path / "a.key", tmp_path / "a.password"
    for path in (cert, key, password):
        path.write_text("x\n")
    base = ["archiver", "stream", "--nats", "tls://x:4222"]
    for extra, says in (
        (["--nats-cert", str(cert)], "--nats-cert and --nats-key go together"),
        (["--nats-key", str(key)], "--nats-cert and --nats-key go together"),
        (
            [
                "--nats-cert",
                str(cert),
                "--nats-key",
                str(key),
                "--nats-password-file",
                str(password),
            ],
            "--nats-cert or --nats-password-file, not both",
        ),
        (
            ["--nats-cert", str(tmp_path / "none.crt"), "--nats-key", str(key)],
            f"--nats-cert {tmp_path / 'none.crt'}: no such file",
        ),
    ):
        result = CliRunner().invoke(app, [*base, *extra], env={})
        assert result.exit_code == 2, result.output
        assert says in result.output, result.output


def test_the_stream_holds_the_archived_subjects_as_a_bounded_work_queue() -> None:
    from nats.js.api import AckPolicy, DiscardPolicy, RetentionPolicy

    topics = Topics("t-1/mesh/v2")
    assert archive_subjects(topics) == [
        "t-1.mesh.v2.trigger.*",
        "t-1.mesh.v2.receipt.*",
        "t-1.mesh.v2.activation.*.*",
        "t-1.mesh.v2.ack.*.*",
        "t-1.mesh.v2.escalation.*",
        "t-1.mesh.v2.log.*.records.*",
    ]
    stream = stream_config(topics, StreamSettings())
    assert stream.retention is RetentionPolicy.WORK_QUEUE
    assert stream.discard is DiscardPolicy.OLD
    assert stream.num_replicas == 3
    assert stream.max_bytes == 10 * 1024**3
    assert stream.max_age == 7 * 86_400
    assert stream.duplicate_window == 120
    consumer = consumer_config(StreamSettings())
    assert consumer.durable_name == "archivers"
    assert consumer.ack_policy is AckPolicy.EXPLICIT
    assert consumer.max_deliver == 10
    assert consumer.ack_wait == 30


@pytest.mark.parametrize(
    ("room", "byte_room", "msg_size", "want"),
    [
        (500, 64 << 20, 300, 500),  # small triggers: the count limit
        (500, 64 << 20, 256 << 10, 16),  # 256 KiB log batches: 4 MiB of them
        (500, 600 << 10, 256 << 10, 2),  # the room left under the byte limit
        (500, 64 << 20, 16 << 20, 1),  # one message larger than a fetch: still one
        (3, 64 << 20, 300, 3),  # the queue's room
    ],
)
def test_a_fetch_asks_for_what_fits_its_bytes_and_the_room_left(
    room: int, byte_room: int, msg_size: int, want: int
) -> None:
    assert fetch_count(room, byte_room, 4 << 20, msg_size) == want


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.MESH_ARCHIVE.archivers.3.1207.1190.1796313266719396548.12",
        "$JS.ACK._.ACCHASH.MESH_ARCHIVE.archivers.5.1207.1190.1796313266719396548.12.r4nd",
        "$JS.ACK.hub.ACCHASH.MESH_ARCHIVE.archivers.1.7.7.1796313266719396548.0",
    ],
)
def test_the_delivery_count_is_read_from_the_ack_subject_as_nats_py_reads_it(reply: str) -> None:
    from nats.aio.msg import Msg

    expected = Msg(None, subject="x", reply=reply).metadata.num_delivered  # type: ignore[arg-type]
    assert delivery_count(reply) == expected


def test_a_reply_that_is_no_ack_subject_counts_as_a_first_delivery() -> None:
    assert delivery_count("_INBOX.archiver.abc") == 1
    assert delivery_count("$JS.ACK.s.c.x.1.1.1.0") == 1  # not a number
    assert delivery_count("$JS.ACK.s.c.\u00b2.1.1.1.0") == 1  # a digit, not a decimal
    assert delivery_count("$JS.ACK.s.c.3.1.1.1.0.x") == 1  # 10 tokens: neither form
