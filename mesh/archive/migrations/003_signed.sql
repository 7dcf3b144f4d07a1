-- Protocol v2 signs messages as JWS (docs/security.md). `payload` keeps the payload the
-- sender signed (its exact text); `jws` keeps the signed message as received (its
-- protected header, payload and signature), so an ack's or a remote trigger's signature
-- can be checked again from the archive alone. NULL: the message came unsigned.
ALTER TABLE acks ADD COLUMN jws jsonb;
ALTER TABLE triggers ADD COLUMN jws jsonb;
