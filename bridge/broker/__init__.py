"""Broker configuration: mosquitto config, ACL, PKI, the car-to-centre bridge, passwords."""
