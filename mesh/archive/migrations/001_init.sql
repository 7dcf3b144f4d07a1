-- The archive's first schema (docs/archive.md). Every table is keyed by what makes a
-- message the same message, so that one delivered twice (QoS 1, shared subscriptions,
-- resent log batches) is stored once. `payload` is the JSON as received (fields newer
-- than the archiver are kept); the columns beside it are copies for querying.

CREATE TABLE triggers (
    event_id       text PRIMARY KEY,
    unit_id        text NOT NULL,
    kind           text NOT NULL,
    source_type    text NOT NULL,
    source_id      text NOT NULL,
    observed_at_ns bigint NOT NULL,
    payload        jsonb NOT NULL,
    archived_by    text NOT NULL,
    archived_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX triggers_by_unit ON triggers (unit_id, observed_at_ns);

-- A trigger (or cancel) gets one receipt; a repeat of it gets another, at another time.
CREATE TABLE receipts (
    event_id      text NOT NULL,
    at_ns         bigint NOT NULL,
    unit_id       text NOT NULL,
    outcome       text NOT NULL,
    activation_id text,
    reason        text NOT NULL,
    payload       jsonb NOT NULL,
    archived_by   text NOT NULL,
    archived_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, at_ns)
);
CREATE INDEX receipts_by_activation ON receipts (activation_id) WHERE activation_id IS NOT NULL;

-- One row per activation: the latest version by (rank_stage, rank_answered), see
-- mesh/archive/intake.py activation_rank. A progress update never replaces a final state.
CREATE TABLE activations (
    activation_id    text PRIMARY KEY,
    issuer           text NOT NULL,
    unit_id          text NOT NULL,
    kind             text NOT NULL,
    trigger_event_id text NOT NULL,
    state            text NOT NULL,
    decided_at_ns    bigint NOT NULL,
    finished_at_ns   bigint,
    rank_stage       smallint NOT NULL,
    rank_answered    integer NOT NULL,
    payload          jsonb NOT NULL,
    archived_by      text NOT NULL,
    archived_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX activations_by_unit ON activations (unit_id, decided_at_ns);

-- A camera answers each attempt once; the same command heard twice (its cell, then its
-- own topic) is answered twice, with two receive times.
CREATE TABLE acks (
    activation_id  text NOT NULL,
    camera_id      text NOT NULL,
    attempt        integer NOT NULL,
    received_at_ns bigint NOT NULL,
    issuer         text NOT NULL,
    unit_id        text,
    status         text NOT NULL,
    reason         text NOT NULL,
    payload        jsonb NOT NULL,
    archived_by    text NOT NULL,
    archived_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (activation_id, camera_id, attempt, received_at_ns)
);

CREATE TABLE escalations (
    activation_id text NOT NULL,
    camera_id     text NOT NULL,
    audience      text NOT NULL,
    reason        text NOT NULL,
    at_ns         bigint NOT NULL,
    unit_id       text NOT NULL,
    kind          text NOT NULL,
    payload       jsonb NOT NULL,
    archived_by   text NOT NULL,
    archived_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (activation_id, camera_id, audience, reason, at_ns)
);

-- Edge activation logs, synced record by record. synced_seq: every record up to it
-- (following prev_seq) is here; head_seq: the highest head the edge has reported.
CREATE TABLE logs (
    log_id        text PRIMARY KEY,
    unit_id       text,
    gateway_id    text,
    synced_seq    bigint NOT NULL DEFAULT 0,
    head_seq      bigint NOT NULL DEFAULT 0,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_batch_at timestamptz NOT NULL DEFAULT now()
);

-- The edge's rows verbatim: the hash chain is over exactly this text, so body is text,
-- never jsonb (which would reorder keys and drop whitespace).
CREATE TABLE log_records (
    log_id        text NOT NULL REFERENCES logs (log_id),
    seq           bigint NOT NULL,
    prev_seq      bigint NOT NULL,
    at_ns         bigint NOT NULL,
    kind          text NOT NULL,
    activation_id text,
    body          text NOT NULL,
    prev_hash     text NOT NULL,
    hash          text NOT NULL,
    archived_by   text NOT NULL,
    archived_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (log_id, seq),
    CHECK (prev_seq < seq)
);
CREATE INDEX log_records_by_activation ON log_records (activation_id)
    WHERE activation_id IS NOT NULL;

-- Archived evidence is never changed or removed. The one update allowed lowers prev_seq:
-- the edge learnt of a retention gap before it (see docs/archive.md, "Sync").
CREATE FUNCTION log_records_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'archived log records are never deleted';
    END IF;
    IF (NEW.log_id, NEW.seq, NEW.at_ns, NEW.kind, NEW.activation_id, NEW.body,
        NEW.prev_hash, NEW.hash)
       IS DISTINCT FROM
       (OLD.log_id, OLD.seq, OLD.at_ns, OLD.kind, OLD.activation_id, OLD.body,
        OLD.prev_hash, OLD.hash)
       OR NEW.prev_seq > OLD.prev_seq THEN
        RAISE EXCEPTION 'archived log records are never changed';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER log_records_append_only BEFORE UPDATE OR DELETE ON log_records
    FOR EACH ROW EXECUTE FUNCTION log_records_guard();
