-- Archive volume, the live tables (docs/archive.md, "Volume, partitions and retention").
--
-- receipts, acks and escalations become partitioned by month of their time, as
-- log_records and presence_repeats are (004_partitions.sql): receipts and escalations by
-- at_ns, acks by received_at_ns, each the gateway's time, which their primary keys
-- already contain. The keys, and so what makes a message the same message (and the
-- writers' ON CONFLICT DO NOTHING), are unchanged. Retention drops a month of all five
-- tables together (mesh/archive/partitions.py).
--
-- A month exists in all five tables or in none: every month log_records has gets the
-- new tables' partitions, and every other month from the oldest row of any of them to
-- the latest (and this month) gets all five's, unless the default partition of
-- log_records or presence_repeats already holds rows of it (an edge clock far off): that
-- month is then created in none, and its rows go to the default partitions, which
-- retention never drops (as the archiver does, mesh/archive/partitions.py ensure_ahead).
--
-- activations and triggers stay as they are: their keys (activation_id, event_id) hold
-- no time, and the archive binds an activation's row by activation_id alone.

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
    first_month date;
    last_month date;
    m date;
    lo bigint;
    hi bigint;
    t text;
BEGIN
    -- The months of the old tables' rows (2000 to 2100, as 004) and of log_records'
    -- partitions.
    WITH times AS (
        SELECT at_ns AS row_ns FROM receipts_v5
        UNION ALL SELECT received_at_ns FROM acks_v5
        UNION ALL SELECT at_ns FROM escalations_v5
    ), months AS (
        -- Whole seconds, as bigint: row_ns / 1e9 is made a double by to_timestamp, which
        -- rounds the last few hundred ns of a month into the next one.
        SELECT date_trunc('month', to_timestamp(row_ns / 1000000000) AT TIME ZONE 'UTC')::date
               AS first_day
          FROM times WHERE row_ns BETWEEN 946684800000000000 AND 4102444800000000000
        UNION ALL
        SELECT to_date(substring(c.relname FROM '^log_records_p([0-9]{6})$'), 'YYYYMM')
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'log_records'::regclass
           AND c.relname ~ '^log_records_p[0-9]{6}$'
    )
    SELECT least(min(first_day), this_month), greatest(max(first_day), this_month)
      INTO first_month, last_month FROM months;
    m := coalesce(first_month, this_month);
    last_month := coalesce(last_month, this_month);
    WHILE m <= last_month LOOP
        lo := (extract(epoch FROM m::timestamp AT TIME ZONE 'UTC') * 1e9)::bigint;
        hi := (extract(epoch FROM (m + interval '1 month')::timestamp AT TIME ZONE 'UTC') * 1e9)::bigint;
        IF to_regclass('log_records_p' || to_char(m, 'YYYYMM')) IS NOT NULL THEN
            FOREACH t IN ARRAY ARRAY['receipts', 'acks', 'escalations'] LOOP
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
                               t || '_p' || to_char(m, 'YYYYMM'), t, lo, hi);
            END LOOP;
        ELSIF NOT EXISTS (SELECT 1 FROM log_records_default WHERE at_ns >= lo AND at_ns < hi)
              AND NOT EXISTS (SELECT 1 FROM presence_repeats_default
                               WHERE at_ns >= lo AND at_ns < hi) THEN
            FOREACH t IN ARRAY ARRAY['log_records', 'presence_repeats', 'receipts', 'acks',
                                     'escalations'] LOOP
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
                               t || '_p' || to_char(m, 'YYYYMM'), t, lo, hi);
            END LOOP;
        ELSE
            RAISE NOTICE 'month % not created: the default partition holds log records of it',
                to_char(m, 'YYYYMM');
        END IF;
        m := (m + interval '1 month')::date;
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
