"""MQTT transport: the client link, broker URLs, the embedded mosquitto."""
