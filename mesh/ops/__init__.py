"""Running it: logging set-up, metrics, health, HTTP endpoints, systemd notify, failpoints,
task groups and process settings."""
