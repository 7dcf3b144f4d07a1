-- Copies the archive refused, kept for an auditor (docs/archive.md, "Conflicts"): an
-- activation record from another gateway, unit or trigger than the row already held, an
-- ack whose signature the trust store does not accept, a log record that differs from the
-- archived one. The row they conflict with is never changed.
CREATE TABLE conflicts (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,          -- activation, ack, log_record
    subject     text NOT NULL,          -- what it claims to be: activation id, ack key, log:seq
    -- Whom the cap on kept copies counts against: the activation id, the camera an ack
    -- speaks for (the ACL ties it to that camera's credential), the log id.
    source      text NOT NULL,
    code        text NOT NULL,          -- why refused: other_issuer, unsigned, differs, ...
    detail      text NOT NULL,
    -- Whose record it concerns (the row held, or the gateway an ack was addressed to), so
    -- that `archiver verify` can list it with that gateway's log.
    unit_id     text,
    issuer      text,
    digest      text NOT NULL,          -- sha256 of the refused payload, hex
    size        integer NOT NULL,       -- its length in bytes
    payload     text NOT NULL,          -- as received, cut at 64 KiB
    copies      integer NOT NULL DEFAULT 1,
    archived_by text NOT NULL,
    first_at    timestamptz NOT NULL DEFAULT now(),
    last_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, subject, digest)
);
CREATE INDEX conflicts_by_source ON conflicts (kind, source, first_at);
CREATE INDEX conflicts_by_unit ON conflicts (unit_id, first_at);
CREATE INDEX conflicts_by_issuer ON conflicts (issuer, first_at);

-- Whether the ack's signature was checked against the trust store (`archiver --trust`):
-- true, checked and valid; NULL, archived without a trust store. A refused ack is never
-- stored here (it is in conflicts). signer: the key id that signed it, if any.
ALTER TABLE acks ADD COLUMN verified boolean;
ALTER TABLE acks ADD COLUMN signer text;
