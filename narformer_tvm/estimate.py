"""Predicting latency of ONNX files with a shipped hardware profile or a checkpoint."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from narformer_tvm.errors import InputError, NarformerError
from narformer_tvm.graph.onnx_graph import OpGraph, build_graph


def collect_models(paths: Sequence[str | Path]) -> list[Path]:
    """ONNX files named directly, or found (non-recursively) in named folders."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.onnx"))
            if not found:
                raise InputError(f"{p}: folder holds no .onnx files", hint="pass .onnx files or a folder of them")
            files += found
        else:
            files.append(p)
    return files


@dataclass
class Estimate:
    path: Path
    latency_ms: float | None = None
    spread_ms: float | None = None  # ensemble std (0 for a single model)
    graph: OpGraph | None = None
    error: NarformerError | None = None

    def to_dict(self) -> dict:
        d = {"model": str(self.path), "latency_ms": self.latency_ms, "spread_ms": self.spread_ms}
        if self.graph is not None:
            d.update(nodes=len(self.graph.nodes), macs=self.graph.macs, params=self.graph.params,
                     batch_size=self.graph.batch_size)
        if self.error is not None:
            d["error"] = str(self.error)
        return d


def estimate(paths: Sequence[str | Path], predictor, input_shapes: dict | None = None,
             batch_size: int | None = None) -> list[Estimate]:
    """Predict every model with a loaded predictor (``model.load.load_predictor``); a model that cannot
    be read gets its error, the others still run."""
    results = [Estimate(Path(p)) for p in paths]
    ok = []
    for r in results:
        try:
            r.graph = build_graph(r.path, input_shapes, batch_size)
            ok.append(r)
        except NarformerError as e:
            r.error = e
    if ok:
        mean, std = predictor.predict_encoded(predictor.encode([r.graph for r in ok]))
        for r, m, s in zip(ok, mean, std):
            r.latency_ms, r.spread_ms = float(m), float(s)
    return results
