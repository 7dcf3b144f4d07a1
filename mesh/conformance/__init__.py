"""The conformance kit (docs/conformance.md): ``trigger-mesh conformance camera`` plays
gateway, dispatch and attacker against one camera under test, ``conformance gateway``
plays cameras and dispatch against one gateway, both over MQTT only, and each reports
every check of the spec it makes, MUST or SHOULD, as a table and as JUnit XML.

Pure parts (which checks exist, the commands and scenes the kit builds, the verdicts of
what it saw, the report) are apart from the I/O (``mqtt``, ``process``, the runners).
Every signature the kit makes or checks goes through ``wire``.
"""
