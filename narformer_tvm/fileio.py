"""Files that survive interruption: atomic writes and resumable JSON results."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Callable


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """``write`` a temporary file beside ``path``, then rename it over ``path``: an interrupted save
    (Ctrl-C, a crash) never leaves a half-written file where a resumed run or a user reads it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_model_json(path: str | Path, fmt: str, kind: str, hint: str) -> dict:
    """A small model saved as JSON with a ``format`` field: its fields, or a CheckpointError naming the
    file and the fault (unreadable, or another format) with ``hint``."""
    from narformer_tvm.errors import CheckpointError

    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable {kind} ({type(e).__name__})", hint=hint) from None
    if not isinstance(d, dict) or d.get("format") != fmt:
        raise CheckpointError(f"{path}: not a {kind} of format {fmt}", hint=hint)
    return d


def read_results(path: Path, matches: Callable[[dict], bool]) -> dict | None:
    """The JSON state saved in ``path`` (which exists) when it parses and ``matches`` accepts it, else None."""
    try:
        state = json.loads(path.read_text())
    except ValueError:
        return None
    return state if isinstance(state, dict) and matches(state) else None


def resume_results(path: Path | None, matches: Callable[[dict], bool],
                   notice: Callable[[str], None] = warnings.warn) -> dict | None:
    """The JSON state an interrupted evaluation saved in ``path``, when ``matches`` accepts it as the
    same run. A file of another run (or an unreadable one) is moved aside, never overwritten: its
    results took hours; ``notice`` says where."""
    if path is None or not path.exists():
        return None
    state = read_results(path, matches)
    if state is not None:
        return state
    stamp, n = time.strftime("%Y%m%d-%H%M%S"), 1
    aside = path.with_name(f"{path.stem}-{stamp}{path.suffix}")
    while aside.exists():  # a second move within the same second
        n += 1
        aside = path.with_name(f"{path.stem}-{stamp}-{n}{path.suffix}")
    path.replace(aside)
    notice(f"{path} held results of other settings: moved to {aside}")
    return None
