"""The central archive: triggers, receipts, activations, acks, escalations and synced
edge logs in PostgreSQL (docs/archive.md). Importing this package loads nothing heavy:
psycopg is imported by the modules that talk to the database."""
