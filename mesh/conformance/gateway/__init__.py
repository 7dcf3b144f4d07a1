"""``trigger-mesh conformance gateway``: the kit plays cameras and dispatch against one
gateway under test and checks the gateway's side of the spec (docs/conformance.md)."""
