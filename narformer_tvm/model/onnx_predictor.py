"""A shipped predictor run by ONNX Runtime: the same numbers as the torch checkpoint, without torch.

``estimate`` loads this one, so that a prediction costs an ONNX Runtime session instead of a torch
import. The file holds every ensemble member as one graph, outputs (K, B) in normalised units, and
the checkpoint's feature encoding, target scale and profile as JSON metadata.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from narformer_tvm.errors import CheckpointError, PredictorNotFoundError
from narformer_tvm.graph.onnx_graph import OpGraph
from narformer_tvm.graph.tokens import (
    FEATURE_VERSION,
    EncodedGraph,
    FeatureConfig,
    encode,
)
from narformer_tvm.model.batching import pad_graphs, size_buckets

METADATA_KEY = "narformer_tvm.predictor"  # metadata_props entry holding the JSON below
ONNX_FORMAT_VERSION = 1


@dataclass
class OnnxPredictor:
    """Predicts like ``model.predictor.Predictor`` (mean and spread over the ensemble) from an ONNX file."""

    path: Path
    features: FeatureConfig
    scale: float  # ms per normalised output unit (TargetNorm.scale)
    profile: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    session: object = None

    @classmethod
    def load(cls, path: str | Path) -> "OnnxPredictor":
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise PredictorNotFoundError(f"{path}: no such predictor file")
        try:
            so = ort.SessionOptions()
            so.log_severity_level = 3
            session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable ONNX predictor ({type(e).__name__})",
                                  hint="export one with `narformer-tvm train ... --profile-dir DIR`") from None
        raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise CheckpointError(f"{path}: an ONNX file, but not a narformer-tvm predictor",
                                  hint="pass a predictor.onnx written by narformer-tvm, or a .pt checkpoint")
        meta = json.loads(raw)
        if meta.get("version") != ONNX_FORMAT_VERSION:
            raise CheckpointError(f"{path}: predictor format version {meta.get('version')}, this narformer-tvm reads "
                                  f"version {ONNX_FORMAT_VERSION}", hint="re-export it with this release")
        feats = FeatureConfig.from_dict(meta["features"])
        if feats.version != FEATURE_VERSION:
            raise CheckpointError(
                f"{path}: trained on feature encoding v{feats.version}, this narformer-tvm encodes v{FEATURE_VERSION}",
                hint="retrain the predictor on data encoded by this version")
        return cls(path, feats, float(meta["target"]["scale"]), meta.get("profile") or {},
                   meta.get("metadata") or {}, session)

    @property
    def _inputs(self) -> list[str]:  # the export drops the inputs a readout does not read (cost, kind)
        return [i.name for i in self.session.get_inputs()]

    def encode(self, graphs: Sequence[OpGraph]) -> list[EncodedGraph]:
        return [encode(g, self.features) for g in graphs]

    def predict_encoded(self, graphs: Sequence[EncodedGraph], batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Predicted latency in ms per graph: (ensemble mean, ensemble std)."""
        outs = None
        for idx in size_buckets([g.n for g in graphs], batch_size):
            arrays = pad_graphs([graphs[i] for i in idx])
            (out,) = self.session.run(None, {k: arrays[k] for k in self._inputs})  # (K, B)
            if outs is None:
                outs = np.zeros((out.shape[0], len(graphs)))
            outs[:, idx] = self.scale * out.astype(np.float64)
        if outs is None:
            return np.zeros(0), np.zeros(0)
        return outs.mean(0), outs.std(0)

    def predict(self, graphs: Sequence[OpGraph]) -> np.ndarray:
        return self.predict_encoded(self.encode(graphs))[0]
