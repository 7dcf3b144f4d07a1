-- Retention of the two live tables that are not partitioned (docs/archive.md, "Volume,
-- partitions and retention"): activations and triggers. Their keys hold no time, so they
-- cannot be partitioned by month; when retention drops a month it deletes their rows of
-- that month instead (activations by decided_at_ns, triggers by observed_at_ns), except
-- those a legal hold covers and the triggers of activations kept. These indexes let it
-- find them without reading either table whole.
CREATE INDEX activations_by_time ON activations (decided_at_ns);
CREATE INDEX activations_by_trigger ON activations (trigger_event_id);
CREATE INDEX triggers_by_time ON triggers (observed_at_ns);
