"""The log-sync payloads (docs/protocol.md, "Log sync"): record batches from an edge log
to the archive, and the archive's synced watermark back."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mesh.protocol.models import (
    MAX_SAFE_INT,
    PROTOCOL_VERSION,
    Frozen,
    Ident,
    ProtocolVersion,
    TimeNs,
)

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# Sequence numbers are SQLite integers in the edge log and bigint in the archive; on the
# wire they stay within what a double holds exactly (no log gets near 2^53 records).
SEQ_END = MAX_SAFE_INT + 1

# A batch stays near these; a single record larger than the byte budget travels alone.
BATCH_MAX_RECORDS = 500
BATCH_TARGET_BYTES = 256 * 1024
# What the archive accepts: one oversized record (an activation naming thousands of
# cameras) plus headroom; anything bigger is refused as too_large.
BATCH_MAX_BYTES = 16 * 1024 * 1024


class LogBatchRecord(Frozen):
    """One row of the edge log, verbatim: the hash is over exactly these columns."""

    seq: Annotated[int, Field(ge=1, lt=SEQ_END)]
    # The seq of the row before it in the edge log when it was sent (0: none). Retention
    # leaves gaps in seq; this says which gaps are expected, so the archive can tell
    # "everything up to here" from "a batch still in flight".
    prev_seq: Annotated[int, Field(ge=0, lt=SEQ_END)]
    at_ns: TimeNs
    kind: Annotated[str, Field(min_length=1, max_length=64)]
    activation_id: Annotated[str, Field(max_length=128)] | None = None
    body: str
    prev_hash: Sha256Hex
    hash: Sha256Hex


class LogBatch(Frozen):
    """``{p}/log/{log_id}/records/{gateway}``: consecutive records of one edge log, in seq order
    (each record's prev_seq is the seq of the one before it; checked on intake)."""

    type: Literal["log_batch"] = "log_batch"
    v: ProtocolVersion = PROTOCOL_VERSION
    log_id: Ident
    unit_id: Ident | None = None
    gateway_id: Ident | None = None
    # The edge log's last seq when this was sent.
    head_seq: Annotated[int, Field(ge=0, lt=SEQ_END)]
    sent_at_ns: TimeNs
    records: Annotated[tuple[LogBatchRecord, ...], Field(min_length=1)]


class LogSynced(Frozen):
    """``{p}/log/{log_id}/synced/{gateway}``, retained: every record of the log up to
    ``synced_seq`` (following prev_seq) is stored in the archive. With ``refused`` (not
    retained, ``synced_seq`` 0): the archive stored none of a batch this gateway sent, and
    stores none of this log from it (the log is another gateway's): why."""

    type: Literal["log_synced"] = "log_synced"
    v: ProtocolVersion = PROTOCOL_VERSION
    log_id: Ident
    synced_seq: Annotated[int, Field(ge=0, lt=SEQ_END)]
    archiver: Ident
    at_ns: TimeNs
    refused: Annotated[str, Field(min_length=1, max_length=512)] | None = None
