"""Simulators and demos, off the production path: the demo, the secure demo, a simulated
camera fleet."""
