"""Transport: MQTT topics (`topics`), the client link and embedded broker (`mqtt/`), and
the broker's configuration (`broker/`)."""
