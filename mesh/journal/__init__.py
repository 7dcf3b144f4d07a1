"""The activation log: its SQLite store, record kinds, hash chain, retention, export and sync."""
