"""The wire: protocol models, their JSON codec, the JSON Schemas, the log-sync messages."""
