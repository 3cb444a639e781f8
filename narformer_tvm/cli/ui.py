"""Console output shared by the commands: tables, progress with ETA, error reports."""
from __future__ import annotations

import math
import sys
import time
from datetime import timedelta

import click

from narformer_tvm.errors import NarformerError


def make_console(stderr: bool = False):
    from rich.console import Console
    stream = sys.stderr if stderr else sys.stdout
    # Piped output is read by people and greps alike: do not cut names at 80 columns.
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else 200)


def si_units(n: float, unit: str = "") -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


LOG_EVERY_S = 30.0  # a progress line at most this often where stderr is a log file, not a terminal


def progress_bar(log_every_s: float | None = None, speed_window_s: float = 30.0):
    """A progress bar with ETA (speed over the last ``speed_window_s``: steps minutes apart need a longer one)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class LoggedProgress(Progress):
        """A live bar never redraws in a log file (a job in the background): there, each task's state
        is printed as a plain line instead, at most every ``log_every_s`` seconds and when it finishes."""

        def update(self, task_id, **kwargs):
            super().update(task_id, **kwargs)
            if self.console.is_terminal:
                return
            task, now = self._tasks[task_id], time.monotonic()
            if last.get(task_id) == "done":
                return
            if task.total is not None and task.completed >= task.total:
                last[task_id] = "done"
            elif now - last.get(task_id, -math.inf) < every:
                return
            else:
                last[task_id] = now
            total = f"/{task.total:g}" if task.total is not None else ""
            status = task.fields.get("status", "")
            left = task.time_remaining
            eta = f" eta {timedelta(seconds=int(left))}" if left is not None and not task.finished else ""
            self.console.print(f"{time.strftime('%H:%M:%S')} {task.description} {task.completed:g}{total} "
                               f"[{timedelta(seconds=int(task.elapsed or 0))}{eta}] {status}", markup=False,
                               highlight=False)

        def advance(self, task_id, advance=1):
            self.update(task_id, advance=advance)

    every = LOG_EVERY_S if log_every_s is None else log_every_s
    last = {}
    return LoggedProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                          console=make_console(stderr=True), transient=False, speed_estimate_period=speed_window_s)


def warn_above(bar):
    """A warning printer that keeps the live progress bar intact (a results file moved aside)."""
    return lambda msg: bar.console.print(f"warning: {msg}", markup=False, highlight=False)


def report_error(err: NarformerError) -> None:
    click.echo(f"error: {err.message}", err=True)
    if err.hint:
        click.echo(f"  hint: {err.hint}", err=True)


def interrupt_on_term(signum, frame):
    raise KeyboardInterrupt  # `kill` (or a batch system's stop) ends a run as Ctrl-C does: saved, resumable
