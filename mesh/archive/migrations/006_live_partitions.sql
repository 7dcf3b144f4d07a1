-- Archive volume, the live tables (docs/archive.md, "Volume, partitions and retention").
--
-- receipts, acks and escalations become partitioned by month of their time, as
-- log_records and presence_repeats are (004_partitions.sql): receipts and escalations by
-- at_ns (the gateway's clock), acks by received_at_ns (the camera's clock), which their
-- primary keys already contain. The keys, and so what makes a message the same message (and the
-- writers' ON CONFLICT DO NOTHING), are unchanged. Retention drops a month of all five
-- tables together (mesh/archive/partitions.py).
--
-- Partitions are made here for the months log_records has (004 and the archivers made
-- them) and for this month; the archiver makes the months ahead of each table
-- (mesh/archive/partitions.py ensure_ahead). A live row of any other month goes to its
-- table's default partition, which retention never drops: a row dated far off (an ack
-- carries the camera's clock) costs no partitions here.

ALTER TABLE receipts RENAME TO receipts_v5;
ALTER INDEX receipts_pkey RENAME TO receipts_v5_pkey;
ALTER INDEX receipts_by_activation RENAME TO receipts_v5_by_activation;
ALTER TABLE acks RENAME TO acks_v5;
ALTER INDEX acks_pkey RENAME TO acks_v5_pkey;
ALTER TABLE escalations RENAME TO escalations_v5;
ALTER INDEX escalations_pkey RENAME TO escalations_v5_pkey;

-- As 001_init.sql made them, with the columns 003_signed.sql added to acks.
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
) PARTITION BY RANGE (at_ns);
CREATE INDEX receipts_by_activation ON receipts (activation_id) WHERE activation_id IS NOT NULL;

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
    verified       boolean,
    signer         text,
    jws            jsonb,
    PRIMARY KEY (activation_id, camera_id, attempt, received_at_ns)
) PARTITION BY RANGE (received_at_ns);

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
) PARTITION BY RANGE (at_ns);

CREATE TABLE receipts_default PARTITION OF receipts DEFAULT;
CREATE TABLE acks_default PARTITION OF acks DEFAULT;
CREATE TABLE escalations_default PARTITION OF escalations DEFAULT;

DO $$
DECLARE
    this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    m date;
    lo bigint;
    hi bigint;
    t text;
BEGIN
    FOR m IN
        SELECT to_date(substring(c.relname FROM '^log_records_p([0-9]{6})$'), 'YYYYMM')
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'log_records'::regclass
           AND c.relname ~ '^log_records_p[0-9]{6}$'
        UNION SELECT this_month
    LOOP
        lo := (extract(epoch FROM m::timestamp AT TIME ZONE 'UTC') * 1e9)::bigint;
        hi := (extract(epoch FROM (m + interval '1 month')::timestamp AT TIME ZONE 'UTC') * 1e9)::bigint;
        FOREACH t IN ARRAY ARRAY['receipts', 'acks', 'escalations'] LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
                           t || '_p' || to_char(m, 'YYYYMM'), t, lo, hi);
        END LOOP;
    END LOOP;
END;
$$;

INSERT INTO receipts (event_id, at_ns, unit_id, outcome, activation_id, reason, payload,
    archived_by, archived_at)
SELECT event_id, at_ns, unit_id, outcome, activation_id, reason, payload, archived_by,
    archived_at FROM receipts_v5;
INSERT INTO acks (activation_id, camera_id, attempt, received_at_ns, issuer, unit_id, status,
    reason, payload, archived_by, archived_at, verified, signer, jws)
SELECT activation_id, camera_id, attempt, received_at_ns, issuer, unit_id, status, reason,
    payload, archived_by, archived_at, verified, signer, jws FROM acks_v5;
INSERT INTO escalations (activation_id, camera_id, audience, reason, at_ns, unit_id, kind,
    payload, archived_by, archived_at)
SELECT activation_id, camera_id, audience, reason, at_ns, unit_id, kind, payload,
    archived_by, archived_at FROM escalations_v5;
DROP TABLE receipts_v5;
DROP TABLE acks_v5;
DROP TABLE escalations_v5;
