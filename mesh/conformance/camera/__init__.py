"""``trigger-mesh conformance camera``: the kit plays gateway, dispatch and attacker against
one camera under test and checks the camera's side of the spec (docs/conformance.md)."""
