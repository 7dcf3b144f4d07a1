-- The live acks a camera stored in the last hour, counted for its budget
-- (mesh/archive/store.py, ACKS_PER_CAMERA_HOUR) without reading the acks table whole.
-- Partial: the acks made from gateways' logs (archived_by '<archiver>/log') are not
-- counted, and a flood of them must not lengthen the count.
-- Building it blocks writes to acks meanwhile: on a large archive, apply it at a quiet hour.
CREATE INDEX acks_live_by_camera ON acks (camera_id, archived_at)
    WHERE archived_by NOT LIKE '%/log';
