"""Progress of a long command on stderr (never stdout, which may carry data): a rich bar
when stderr is a terminal, otherwise structlog ``progress`` records (JSON lines) every
$TRIGGER_MESH_PROGRESS_S seconds (default 5) and one at the end. The counting and the
deciding are mesh.ops.progress."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from mesh.cli.common import fail
from mesh.ops.progress import DEFAULT_EVERY_S, Progress

ENV_EVERY = "TRIGGER_MESH_PROGRESS_S"
# What the operations call: (done, total) so far; total None while it is not known.
Report = Callable[[int, int | None], None]


def _every_s() -> float:
    raw = os.environ.get(ENV_EVERY)
    if raw is None:
        return DEFAULT_EVERY_S
    try:
        every = float(raw)
    except ValueError:
        fail(f"${ENV_EVERY}: {raw!r} is not a number of seconds")
    if not every >= 0:
        fail(f"${ENV_EVERY}: {raw!r} is not 0 or more seconds")
    return every


@contextmanager
def progress(task: str, unit: str, stream: TextIO | None = None) -> Iterator[Report]:
    """Report the progress of ``task`` (counting ``unit``) while the block runs."""
    out = stream or sys.stderr
    meter = Progress(time.monotonic(), _every_s())
    if out.isatty():
        with _bar(task, unit, out, meter) as draw:
            yield draw
        return
    import structlog

    # A logger of its own: whatever the command set for its other logs (a level of
    # warning, a console format), progress records go to stderr as JSON lines.
    log = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    ).bind(logger="mesh.progress", task=task, unit=unit)

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        if meter.update(done, total, now):
            log.info("progress", **meter.snapshot(now).fields())

    yield report
    log.info("progress", final=True, **meter.snapshot(time.monotonic()).fields())


@contextmanager
def _bar(task: str, unit: str, out: TextIO, meter: Progress) -> Iterator[Report]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    from mesh.dispatch.literal import literal_console

    # Every console of the command line is one that prints text as it is.
    with Bar(*columns, console=literal_console(file=out, soft_wrap=False), transient=False) as bar:
        task_id = bar.add_task(task, total=None)

        def report(done: int, total: int | None) -> None:
            meter.update(done, total, time.monotonic())
            bar.update(task_id, completed=meter.done, total=meter.total)

        yield report
