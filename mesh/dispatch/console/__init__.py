"""The dispatch console: a web page fed live from MQTT (``trigger-mesh dispatch``)."""
