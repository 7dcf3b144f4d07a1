-- Live rows filled in from the synced logs (docs/archive.md, "Live rows from the logs").
-- An activation, ack or escalation published live can be lost on the way to the archive
-- (a NATS stream electing a leader drops what reaches it meanwhile); the same facts are
-- records of the gateway's hash-chained log, whose sync resends until stored. The archiver
-- makes the missing live rows from those records once a checkpoint signed by the
-- gateway's trusted key vouches for them.
--
-- vouched_seq/vouched_hash: every record of the log up to this one is vouched for by such
-- a checkpoint and its rows are made; the next check starts after it.
-- vouch_problem: why the log's records are not used. vouch_problem_kind: 'copy' (the
-- copy does not verify: for good, for an auditor to look at) or 'key' (a checkpoint key
-- the trust store does not hold for the gateway: looked at again when an archiver starts,
-- with the trust store it then has).
-- fill_checked_seq: synced_seq when a check last found nothing to do (no checkpoint yet,
-- a gateway not in the fleet file): the log is looked at again once synced_seq passes it.
ALTER TABLE logs ADD COLUMN vouched_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE logs ADD COLUMN vouched_hash text;
ALTER TABLE logs ADD COLUMN vouch_problem text;
ALTER TABLE logs ADD COLUMN vouch_problem_kind text
    CHECK (vouch_problem_kind IN ('copy', 'key') AND vouch_problem IS NOT NULL
           OR vouch_problem_kind IS NULL AND vouch_problem IS NULL);
ALTER TABLE logs ADD COLUMN fill_checked_seq bigint NOT NULL DEFAULT 0;

-- Logs archived before: from their watermark on (what arrived before is not filled in,
-- and a start the archive's own retention dropped is never judged).
UPDATE logs SET vouched_seq = synced_seq, vouched_hash = coalesce(
    (SELECT r.hash FROM log_records r WHERE r.log_id = logs.log_id AND r.seq = logs.synced_seq),
    (SELECT encode(p.hash, 'hex') FROM presence_repeats p
      WHERE p.log_no = logs.log_no AND p.seq = logs.synced_seq))
 WHERE synced_seq > 0;
