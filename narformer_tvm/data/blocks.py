"""Raw timing samples as stored: blocks of runs, packed as bytes."""
from __future__ import annotations

import numpy as np


def pack_blocks(blocks: list[list[float]]) -> bytes:
    """[n_blocks, runs_0, runs_1, ...] as uint16 then all samples as float32."""
    head = np.array([len(blocks), *[len(b) for b in blocks]], dtype=np.uint16)
    body = np.array([x for b in blocks for x in b], dtype=np.float32)
    return head.tobytes() + body.tobytes()


def unpack_blocks(blob: bytes) -> list[list[float]]:
    n = int(np.frombuffer(blob, dtype=np.uint16, count=1)[0])
    sizes = np.frombuffer(blob, dtype=np.uint16, count=n + 1)[1:]
    body = np.frombuffer(blob, dtype=np.float32, offset=2 * (n + 1))
    out, k = [], 0
    for s in sizes:
        out.append(body[k:k + s].astype(float).tolist())
        k += s
    return out
