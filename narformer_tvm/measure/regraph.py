"""Re-extracting stored graphs after a fix to the ONNX analysis."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from narformer_tvm.errors import NarformerError


def regraph(store, families: Sequence[str] | None = None, progress: Callable | None = None) -> dict:
    """Re-extract the stored graphs with this version's ``graph.py`` (after a fix to extraction):
    zoo variants are exported again from their parameters, files read from their path.

    Returns counts: checked, changed, failed (the graph no longer extracts: its measurements become
    failures), missing (a file that is gone, or one that needs the ``--input-shape`` it was profiled
    with, which is not stored: left as it was)."""
    from narformer_tvm.errors import InputShapeError
    from narformer_tvm.graph.onnx_graph import build_graph
    from narformer_tvm.graph.tokens import table
    from narformer_tvm.measure.zoo import Variant

    q = "SELECT id, name, family, source, onnx_path, graph, batch_size FROM models"
    rows = [r for r in store.db.execute(q).fetchall() if not families or r[2] in families]
    counts = {"checked": 0, "changed": 0, "failed": 0, "missing": 0, "names_failed": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (mid, name, family, source, onnx_path, blob, batch) in enumerate(rows):
            src = json.loads(source or "{}")
            if src.get("transform"):  # tune-ort candidates: the graph is the source model's, unchanged here
                continue
            try:
                if "raw" in src:
                    path = Variant(**src).export(Path(tmp) / "model.onnx")
                elif onnx_path and Path(onnx_path).is_file():
                    path = onnx_path
                else:
                    counts["missing"] += 1
                    continue
                g = build_graph(path, batch_size=batch if "raw" not in src else None, name=name)
                new, stats, error = table(g), {"macs": g.macs, "flops": g.flops, "params": g.params,
                                               "memory": g.memory}, None
            except InputShapeError:
                counts["missing"] += 1
                continue
            except NarformerError as e:
                new, stats, error = None, {}, f"{type(e).__name__}: {e.message}"
            counts["checked"] += 1
            if new is None:
                counts["failed"] += 1
                counts["names_failed"].append(name)
                store.replace_graph(mid, None, stats, error)
            elif new.to_bytes() != blob:  # the encoding is deterministic: equal graphs give equal bytes
                counts["changed"] += 1
                store.replace_graph(mid, new, stats)
            if progress:
                progress(i + 1, len(rows), name)
    return counts
