-- Live rows filled in from the synced logs (docs/archive.md, "Live rows from the logs").
-- An activation, ack or escalation published live can be lost on the way to the archive
-- (a NATS stream electing a leader drops what reaches it meanwhile); the same facts are
-- records of the gateway's hash-chained log, whose sync resends until stored. The archiver
-- makes the missing live rows from those records once a checkpoint signed by the
-- gateway's trusted key vouches for them.
--
-- vouched_seq/vouched_hash: every record of the log up to this one is vouched for by such
-- a checkpoint and its rows are made; the next check starts after it.
-- vouch_problem: why the log's records will not be used (a checkpoint by a key that is not
-- its gateway's, a copy that does not verify); set once, for an auditor to look at.
ALTER TABLE logs ADD COLUMN vouched_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE logs ADD COLUMN vouched_hash text;
ALTER TABLE logs ADD COLUMN vouch_problem text;
