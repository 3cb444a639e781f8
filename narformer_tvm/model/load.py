"""Loading a predictor file of either kind: ONNX (no torch needed) or a torch checkpoint."""
from __future__ import annotations

from pathlib import Path


def load_predictor(path: str | Path):
    """An ``OnnxPredictor`` for a .onnx file, else a torch ``Predictor`` (imports torch)."""
    if Path(path).suffix == ".onnx":
        from narformer_tvm.model.onnx_predictor import OnnxPredictor

        return OnnxPredictor.load(path)
    from narformer_tvm.model.predictor import Predictor

    return Predictor.load(path)
