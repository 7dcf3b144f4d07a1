-- Archive volume (docs/archive.md, "Volume, partitions and retention").
--
-- log_records, by far the largest table (presence records and checkpoints are most of
-- it), becomes partitioned by month of at_ns (the record's own time, which is in its
-- hash and so the same in every copy of it): retention drops whole months, and a month
-- is dropped only when no legal hold covers any of its rows. A partitioned table's
-- primary key must contain the partition key, so it is (log_id, seq, at_ns); that
-- (log_id, seq) is still one record is kept by the writer, which looks the seqs up
-- under the log's row lock before inserting (mesh/archive/store.py).
--
-- Rows whose at_ns lies in no month partition (an edge clock far off) go to the default
-- partition, which retention never drops. The archiver creates months ahead
-- (mesh/archive/partitions.py); this migration creates every month its data needs.

ALTER TABLE log_records RENAME TO log_records_v3;
ALTER INDEX log_records_pkey RENAME TO log_records_v3_pkey;
ALTER INDEX log_records_by_activation RENAME TO log_records_v3_by_activation;

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
    PRIMARY KEY (log_id, seq, at_ns),
    CHECK (prev_seq < seq)
) PARTITION BY RANGE (at_ns);
CREATE INDEX log_records_by_activation ON log_records (activation_id)
    WHERE activation_id IS NOT NULL;
CREATE TRIGGER log_records_append_only BEFORE UPDATE OR DELETE ON log_records
    FOR EACH ROW EXECUTE FUNCTION log_records_guard();

-- A presence record that repeats the camera's previous presence record in the same log
-- and month but for its times (a heartbeat the gateway logged, e.g. because a decision
-- read it): kept as the text that differs from that base record (its body is
-- base[:head] || middle || base[length - tail:]), checked against the record's hash before
-- it is stored this way (mesh/archive/fold.py). Read back, it is the record as sent.
-- prev_hash NULL: the hash of its predecessor (prev_seq), stored in the same batch and
-- month, which it was checked to link to.
-- The log as a small number: presence_repeats is most of the rows, and log ids are 32
-- characters (in the row and again in its index entry).
ALTER TABLE logs ADD COLUMN log_no integer GENERATED ALWAYS AS IDENTITY UNIQUE;

CREATE TABLE presence_repeats (
    log_no    integer NOT NULL REFERENCES logs (log_no),
    seq       bigint NOT NULL,
    prev_seq  bigint NOT NULL,
    at_ns     bigint NOT NULL,
    base_seq  bigint NOT NULL,
    head      integer NOT NULL,
    tail      integer NOT NULL,
    middle    text NOT NULL,
    prev_hash bytea,
    hash      bytea NOT NULL,
    PRIMARY KEY (log_no, seq, at_ns),
    CHECK (prev_seq < seq AND base_seq < seq)
) PARTITION BY RANGE (at_ns);

CREATE FUNCTION presence_repeats_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'archived log records are never deleted';
    END IF;
    IF (NEW.log_no, NEW.seq, NEW.at_ns, NEW.base_seq, NEW.head, NEW.tail, NEW.middle,
        NEW.prev_hash, NEW.hash)
       IS DISTINCT FROM
       (OLD.log_no, OLD.seq, OLD.at_ns, OLD.base_seq, OLD.head, OLD.tail, OLD.middle,
        OLD.prev_hash, OLD.hash)
       OR NEW.prev_seq > OLD.prev_seq THEN
        RAISE EXCEPTION 'archived log records are never changed';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER presence_repeats_append_only BEFORE UPDATE OR DELETE ON presence_repeats
    FOR EACH ROW EXECUTE FUNCTION presence_repeats_guard();

-- The latest full presence record of each camera in each log: what the next one is
-- compared with. One row per (log, camera), updated in place.
CREATE TABLE presence_bases (
    log_id    text NOT NULL REFERENCES logs (log_id),
    camera_id text NOT NULL,
    seq       bigint NOT NULL,
    at_ns     bigint NOT NULL,
    body      text NOT NULL,
    PRIMARY KEY (log_id, camera_id)
);

-- Legal holds: while a hold is active (released_at IS NULL), retention drops no month
-- holding a row it covers. Exactly one of activation_id, unit_id, or a time range.
CREATE TABLE holds (
    id            bigserial PRIMARY KEY,
    activation_id text,
    unit_id       text,
    from_ns       bigint,
    to_ns         bigint,
    reason        text NOT NULL,
    placed_by     text NOT NULL,
    placed_at     timestamptz NOT NULL DEFAULT now(),
    released_by   text,
    released_at   timestamptz,
    CHECK (num_nonnulls(activation_id, unit_id, from_ns) = 1),
    CHECK ((from_ns IS NULL) = (to_ns IS NULL) AND (from_ns IS NULL OR from_ns < to_ns))
);

-- What retention dropped, month by month (and what it kept for a hold): the archive's
-- own record of its gaps.
CREATE TABLE retention_runs (
    id         bigserial PRIMARY KEY,
    month      text NOT NULL,           -- YYYYMM
    from_ns    bigint NOT NULL,
    to_ns      bigint NOT NULL,
    action     text NOT NULL,           -- dropped, kept_for_hold
    rows       bigint NOT NULL,
    detail     text NOT NULL,
    run_by     text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE log_records_default PARTITION OF log_records DEFAULT;
CREATE TABLE presence_repeats_default PARTITION OF presence_repeats DEFAULT;

-- Every month the old table's rows fall in, and this month: created, then the rows moved.
DO $$
DECLARE
    first_month date;
    last_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    m date;
    lo bigint;
    hi bigint;
BEGIN
    SELECT date_trunc('month', to_timestamp(min(at_ns) / 1e9) AT TIME ZONE 'UTC')::date
      INTO first_month FROM log_records_v3
     WHERE at_ns BETWEEN 946684800000000000 AND 4102444800000000000;  -- 2000 to 2100
    SELECT greatest(last_month,
           date_trunc('month', to_timestamp(max(at_ns) / 1e9) AT TIME ZONE 'UTC')::date)
      INTO last_month FROM log_records_v3
     WHERE at_ns BETWEEN 946684800000000000 AND 4102444800000000000;
    m := coalesce(least(first_month, last_month), last_month);
    WHILE m <= last_month LOOP
        lo := (extract(epoch FROM m::timestamp AT TIME ZONE 'UTC') * 1e9)::bigint;
        hi := (extract(epoch FROM (m + interval '1 month')::timestamp AT TIME ZONE 'UTC') * 1e9)::bigint;
        EXECUTE format('CREATE TABLE %I PARTITION OF log_records FOR VALUES FROM (%s) TO (%s)',
                       'log_records_p' || to_char(m, 'YYYYMM'), lo, hi);
        EXECUTE format('CREATE TABLE %I PARTITION OF presence_repeats FOR VALUES FROM (%s) TO (%s)',
                       'presence_repeats_p' || to_char(m, 'YYYYMM'), lo, hi);
        m := (m + interval '1 month')::date;
    END LOOP;
END;
$$;

INSERT INTO log_records SELECT log_id, seq, prev_seq, at_ns, kind, activation_id, body,
    prev_hash, hash, archived_by, archived_at FROM log_records_v3;
DROP TABLE log_records_v3;
