"""Everything MQTT: topics, payload codec, the client link, and the embedded broker."""

from bridge.codec import PayloadError, decode, encode
from bridge.topics import Topics
from bridge.urls import BrokerUrl

__all__ = ["BrokerUrl", "PayloadError", "Topics", "decode", "encode"]
