"""Exporting a trained predictor to ONNX for ``estimate``: every ensemble member in one graph, weights
stored as float16 (half the size; predictions move by well under the label noise, tested)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from narformer_tvm.fileio import write_atomically
from narformer_tvm.graph.tokens import EncodedGraph
from narformer_tvm.model.batching import INPUT_NAMES, collate
from narformer_tvm.model.onnx_predictor import METADATA_KEY, ONNX_FORMAT_VERSION
from narformer_tvm.model.predictor import Predictor

FP16_MIN_ELEMENTS = 256  # smaller tensors (scales, biases of the head) stay float32: no size to win


class _Ensemble(nn.Module):
    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(models)

    def forward(self, x, adj, degree, mask, static, cost, kind):
        return torch.stack([m(x, adj, degree, mask, static, cost, kind) for m in self.members])  # (K, B)


def _example_graphs(predictor: Predictor) -> list[EncodedGraph]:
    """Two graphs of different sizes, so that the trace keeps batch and node counts symbolic."""
    rng = np.random.default_rng(0)
    f, s = predictor.config.n_features, predictor.config.n_static
    out = []
    for n in (5, 3):
        out.append(EncodedGraph(x=rng.standard_normal((n, f)).astype(np.float32),
                                edges=np.array([(i, i + 1) for i in range(n - 1)], dtype=np.int64),
                                static=np.full(s, 0.5, dtype=np.float32), cost=np.ones((n, 2), dtype=np.float32),
                                kind=np.zeros(n, dtype=np.int64)))
    return out


def _weights_to_fp16(model) -> None:
    """Store large float32 initializers as float16, cast back to float32 where the graph starts."""
    import onnx
    from onnx import helper, numpy_helper

    casts, kept = [], []
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size >= FP16_MIN_ELEMENTS:
            kept.append(numpy_helper.from_array(arr.astype(np.float16), init.name + "_fp16"))
            casts.append(helper.make_node("Cast", [init.name + "_fp16"], [init.name], to=onnx.TensorProto.FLOAT))
        else:
            kept.append(init)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    nodes = casts + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def export_onnx(predictor: Predictor, path: str | Path, fp16: bool = True, opset: int = 17) -> Path:
    """Write ``predictor`` as an ONNX file that ``OnnxPredictor`` runs without torch."""
    import io

    import onnx

    path = Path(path)
    for m in predictor.models:
        m.eval()
    batch = collate(_example_graphs(predictor))
    axes = {"x": {0: "B", 1: "N"}, "adj": {0: "B", 1: "N", 2: "N"}, "degree": {0: "B", 1: "N"},
            "mask": {0: "B", 1: "N"}, "static": {0: "B"}, "cost": {0: "B", 1: "N"}, "kind": {0: "B", 1: "N"},
            "latency": {1: "B"}}
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(_Ensemble(predictor.models), batch.inputs(), buf, input_names=list(INPUT_NAMES),
                          output_names=["latency"], dynamic_axes=axes, opset_version=opset, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    if fp16:
        _weights_to_fp16(model)
    meta = {"version": ONNX_FORMAT_VERSION, "features": predictor.features.to_dict(),
            "target": {"kind": predictor.target.kind, "scale": predictor.target.scale},
            "model_config": predictor.config.to_dict(), "members": len(predictor.models),
            "profile": predictor.profile, "metadata": predictor.metadata, "fp16_weights": fp16}
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(meta, default=str)})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: onnx.save(model, str(tmp)))
    return path
