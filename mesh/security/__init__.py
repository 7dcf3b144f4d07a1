"""Signing, the trust store, the checks made on signed payloads, key files, the fleet file."""
