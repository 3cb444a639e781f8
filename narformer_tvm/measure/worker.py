"""A persistent helper process behind a pipe (imports paid once), restarted after a crash or a timeout."""
from __future__ import annotations

import multiprocessing as mp
from dataclasses import asdict
from typing import Callable

from narformer_tvm.errors import NarformerError
from narformer_tvm.measure.backends import Measurement

STARTUP_TIMEOUT = 180


class Worker:
    """Runs ``target(conn)`` in a spawned process: it sends "ready", then answers each task sent to it
    with one result dict. A crash or a timeout is answered as a failed measurement, as data."""

    def __init__(self, target: Callable, what: str = "worker"):
        self.target, self.what, self.proc = target, what, None
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=self.target, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        # Task timeouts start once the worker has paid its imports.
        if not self.conn.poll(STARTUP_TIMEOUT) or self.conn.recv() != "ready":
            self.kill()
            raise NarformerError(f"the {self.what} did not start within {STARTUP_TIMEOUT} s")

    def call(self, task: dict, timeout: float) -> dict:
        self.conn.send(task)
        if not self.conn.poll(timeout):
            self.restart()
            return {"measurement": asdict(Measurement(error=f"timed out after {timeout:.0f} s ({self.what} killed)"))}
        try:
            return self.conn.recv()
        except (EOFError, ConnectionResetError):
            self.proc.join(5)
            code = self.proc.exitcode
            self.restart()
            return {"measurement": asdict(Measurement(error=f"{self.what} crashed (exit code {code})"))}

    def restart(self) -> None:
        self.kill()
        self._start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.join(5)

    def close(self) -> None:
        try:
            self.conn.send(None)
            self.proc.join(5)
        except (OSError, BrokenPipeError):
            pass
        self.kill()
