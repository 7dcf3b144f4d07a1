"""The project's gateway broken on purpose, for the conformance kit's tests.

    python tests/conformance_gateway.py FLAW gateway --config FILE …

runs ``trigger-mesh gateway …`` (the rest of the arguments) with one flaw:

- ``no-cells``: a command goes to its units' and named cameras' topics only, never to the
  cells that meet its circle, so cameras in range hear it only from the retries.
"""

from __future__ import annotations

import sys


def main() -> None:
    flaw, args = sys.argv[1], sys.argv[2:]
    if flaw != "no-cells":
        raise SystemExit(f"unknown flaw {flaw!r}")
    from bridge.topics import Topics
    from mesh.decide import fanout
    from mesh.gateway import coordinator
    from mesh.protocol.models import RecordStart

    def without_cells(topics: Topics, command: RecordStart) -> list[str]:
        cell_topics = topics.command_cell("")
        return [t for t in fanout.command_topics(topics, command) if not t.startswith(cell_topics)]

    coordinator.command_topics = without_cells  # type: ignore[assignment]
    from mesh.cli.app import app

    app(args, prog_name="trigger-mesh")


if __name__ == "__main__":
    main()
