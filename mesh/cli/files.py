"""``trigger-mesh files``: the configs, CAN rules, systemd units and schemas shipped in the
package, listed or copied out of an installed package (docs/install.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mesh.cli.common import console, fail


def files(
    name: Annotated[
        str | None,
        typer.Argument(help="configs, systemd, schemas or asyncapi (default: all)"),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Copy them into this directory")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite files that exist")] = False,
) -> None:
    """List the files shipped in the package, or copy them out with --out."""
    from mesh.files import NAMES, FilesError, copy_out, listing, shipped

    try:
        items = [shipped(n) for n in (NAMES if name is None else [name])]
        if out is not None:
            for path in copy_out([item.name for item in items], out, force=force):
                console().print(str(path), highlight=False)
            return
        for item in items:
            found = listing(item.name)
            console().print(f"{item.name}: {item.about}", highlight=False)
            for rel, _ in found:
                console().print(f"  {rel}", highlight=False)
    except FilesError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"--out {out}: {exc.strerror or exc}")
