-- Retention of the two live tables that are not partitioned (docs/archive.md, "Volume,
-- partitions and retention"): activations and triggers. Their keys hold no time, so they
-- cannot be partitioned by month; when retention drops a month it deletes their rows
-- dated before its end instead (activations by decided_at_ns, triggers by
-- observed_at_ns), except those a legal hold keeps (mesh/archive/partitions.py). These
-- indexes let it find them without reading either table whole. Building them blocks
-- writes to the two tables meanwhile: on a large archive, apply it at a quiet hour.
CREATE INDEX activations_by_time ON activations (decided_at_ns);
CREATE INDEX activations_by_trigger ON activations (trigger_event_id);
CREATE INDEX triggers_by_time ON triggers (observed_at_ns);
