"""Independent trainings side by side: one spawned process and one torch thread each.

The predictors here are small and train on batches of a few graphs, which give torch's intra-op threads
little to share: on a machine of a few cores, trainings run one per core finish sooner than the same
trainings one after another on every core.
"""
from __future__ import annotations

import os
import queue as queues
import signal
import time
from typing import Callable, Sequence

Call = tuple[Callable, tuple, dict]  # (function, args, kwargs); the function takes a ``progress`` keyword

_progress_queue = None  # in a worker: where its calls' progress lines go


def available_cores() -> int:
    """Cores this process may run on (its affinity: a pinned process counts its pins)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _start_worker(progress_queue) -> None:
    global _progress_queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it ends the pool
    import torch

    torch.set_num_threads(1)
    _progress_queue = progress_queue


def _run(index: int, fn: Callable, args: tuple, kwargs: dict, progress: Callable[[int, str | None], None] | None):
    report = (lambda line: progress(index, line)) if progress else None
    result = fn(*args, progress=report, **kwargs)
    if progress:
        progress(index, None)
    return result


def _run_in_worker(index: int, fn: Callable, args: tuple, kwargs: dict):
    return _run(index, fn, args, kwargs, (lambda *item: _progress_queue.put(item)) if _progress_queue else None)


def run_side_by_side(calls: Sequence[Call], processes: int | None = None,
                     progress: Callable[[int, str | None], None] | None = None) -> list:
    """``fn(*args, progress=..., **kwargs)`` of each of ``calls``, in order of ``calls``, run by up to
    ``processes`` worker processes (default: the cores this process may use); ``progress(i, line)``
    hears call i's lines, and ``progress(i, None)`` when it has finished. With one process or one call,
    they run here, one after another. The functions, arguments and results travel by pickle."""
    processes = min(processes or available_cores(), len(calls))
    if processes <= 1:
        return [_run(i, fn, args, kwargs, progress) for i, (fn, args, kwargs) in enumerate(calls)]
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # forking a process that has run torch threads can hang
    lines = ctx.Queue()
    pool = ctx.Pool(processes, initializer=_start_worker, initargs=(lines if progress else None,))
    try:
        pending = [pool.apply_async(_run_in_worker, (i, fn, args, kwargs)) for i, (fn, args, kwargs) in enumerate(calls)]
        finished: set[int] = set()
        while not all(p.ready() for p in pending):
            _relay(lines, progress, finished, wait_s=0.2)
        # A worker's lines reach the queue through a feeder thread and may trail its result: wait for the
        # end line of every call that succeeded, a few seconds at most.
        succeeded = {i for i, p in enumerate(pending) if p.successful()}
        deadline = time.monotonic() + 5.0
        while progress and not succeeded <= finished and time.monotonic() < deadline:
            _relay(lines, progress, finished, wait_s=0.1)
        results = [p.get() for p in pending]  # a call's exception is raised here
        pool.close()
    except BaseException:
        pool.terminate()  # Ctrl-C or a failed call: no training left running
        raise
    finally:
        pool.join()
    return results


def _relay(lines, progress, finished: set[int], wait_s: float) -> None:
    """Hands the queued lines to ``progress``; notes in ``finished`` the calls whose end line came."""
    if progress is None:
        time.sleep(wait_s)
        return
    try:
        item = lines.get(timeout=wait_s)
        while True:
            progress(*item)
            if item[1] is None:
                finished.add(item[0])
            item = lines.get_nowait()
    except queues.Empty:
        return
