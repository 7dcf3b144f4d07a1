"""The in-car gateway daemon: the daemon, its coordinator, the outbox and its forwarder,
and the observer (health, metrics, systemd)."""
