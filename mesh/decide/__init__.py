"""The pure decision core: policy, admission, planning, targeting, presence, cells, fan-out,
geometry, the activation tracker, the camera's decision and ack pacing.

Nothing here does I/O: no asyncio, no MQTT, no SQLite, no files (checked by import-linter,
`make lint`). Time is passed in."""
