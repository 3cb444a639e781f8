"""A trained predictor: model weights + everything needed to use them, in a versioned checkpoint."""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from narformer_tvm.errors import CheckpointError, PredictorNotFoundError
from narformer_tvm.fileio import write_atomically
from narformer_tvm.graph.onnx_graph import OpGraph
from narformer_tvm.graph.tokens import (
    FEATURE_VERSION,
    EncodedGraph,
    FeatureConfig,
    encode,
)
from narformer_tvm.model.batching import collate, size_buckets
from narformer_tvm.model.narformer import ModelConfig, NARFormer

CHECKPOINT_FORMAT = "narformer-tvm-predictor"


CHECKPOINT_VERSION = 1


@dataclass
class TargetNorm:
    """How latency (ms) maps to the model's positive output."""

    kind: str = "ratio"  # the model predicts y / scale
    scale: float = 1.0  # ms; typically the training set's median latency

    def encode(self, ms: np.ndarray) -> np.ndarray:
        return np.asarray(ms, dtype=np.float64) / self.scale

    def decode(self, out: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(out, dtype=np.float64)


@dataclass
class Predictor:
    """One model or an ensemble of models sharing one feature encoding and target normalisation."""

    models: list[NARFormer]
    features: FeatureConfig
    target: TargetNorm = field(default_factory=TargetNorm)
    profile: dict = field(default_factory=dict)  # hardware profile it was trained for
    metadata: dict = field(default_factory=dict)  # training data, metrics, ...

    @property
    def config(self) -> ModelConfig:
        return self.models[0].cfg

    def encode(self, graphs: Sequence[OpGraph]) -> list[EncodedGraph]:
        return [encode(g, self.features) for g in graphs]

    @torch.no_grad()
    def predict_encoded(self, graphs: Sequence[EncodedGraph], batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Predicted latency in ms per graph: (ensemble mean, ensemble std)."""
        outs = np.zeros((len(self.models), len(graphs)))
        for m in self.models:
            m.eval()
        for idx in size_buckets([g.n for g in graphs], batch_size):
            batch = collate([graphs[i] for i in idx])
            for k, m in enumerate(self.models):
                outs[k, idx] = self.target.decode(m(*batch.inputs()).numpy())
        return outs.mean(0), outs.std(0)

    def predict(self, graphs: Sequence[OpGraph]) -> np.ndarray:
        return self.predict_encoded(self.encode(graphs))[0]

    # ----- checkpoint ------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "model_config": self.config.to_dict(), "features": self.features.to_dict(),
            "target": asdict(self.target), "profile": self.profile, "metadata": self.metadata,
            "state_dicts": [m.state_dict() for m in self.models],
        }
        write_atomically(path, lambda tmp: torch.save(state, tmp))

    @classmethod
    def load(cls, path: str | Path, vocab: Sequence[str] | None = None) -> "Predictor":
        """Load a checkpoint; with ``vocab``, insist that it was trained on that op vocabulary."""
        path = Path(path)
        if not path.is_file():
            raise PredictorNotFoundError(f"{path}: no such predictor file")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable predictor checkpoint ({type(e).__name__})",
                                  hint="pass a file written by `narformer-tvm train`") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path}: not a narformer-tvm predictor checkpoint",
                                  hint="pass a file written by `narformer-tvm train`")
        if state.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format version {state.get('version')}, this narformer-tvm reads "
                f"version {CHECKPOINT_VERSION}", hint="retrain the predictor, or use the narformer-tvm "
                "release that wrote it")
        feats = FeatureConfig.from_dict(state["features"])
        if feats.version != FEATURE_VERSION:
            raise CheckpointError(
                f"{path}: trained on feature encoding v{feats.version}, this narformer-tvm encodes v{FEATURE_VERSION}",
                hint="retrain the predictor on data encoded by this version")
        if vocab is not None and tuple(vocab) != feats.vocab:
            missing = sorted(set(vocab) - set(feats.vocab))[:8]
            extra = sorted(set(feats.vocab) - set(vocab))[:8]
            raise CheckpointError(
                f"{path}: op vocabulary differs ({len(feats.vocab)} ops in the checkpoint, {len(vocab)} "
                f"expected; missing {missing}, extra {extra})", hint="retrain on the current vocabulary")
        cfg = ModelConfig(**state["model_config"])
        if cfg.n_features != feats.n_features:
            raise CheckpointError(
                f"{path}: weights take {cfg.n_features} features but its vocabulary/encoding gives "
                f"{feats.n_features}", hint="the checkpoint is inconsistent; retrain it")
        models = []
        for sd in state["state_dicts"]:
            m = NARFormer(cfg)
            try:
                m.load_state_dict(sd)
            except RuntimeError as e:
                raise CheckpointError(f"{path}: weights do not fit the model config ({str(e).splitlines()[0]})",
                                      hint="the checkpoint is inconsistent; retrain it") from None
            m.eval()
            models.append(m)
        return cls(models=models, features=feats, target=TargetNorm(**state["target"]),
                   profile=state.get("profile") or {}, metadata=state.get("metadata") or {})


def new_predictor(features: FeatureConfig | None = None, ensemble: int = 1, seed: int = 0,
                  **model_kw) -> Predictor:
    """An untrained predictor; models are initialised deterministically from ``seed``."""
    features = features or FeatureConfig()
    cfg = ModelConfig(n_features=features.n_features, n_static=features.n_static, **model_kw)
    models = []
    for k in range(ensemble):
        torch.manual_seed(seed + k)
        models.append(NARFormer(cfg))
    return Predictor(models=models, features=features)


def merge_predictors(predictors: Sequence[Predictor]) -> Predictor:
    """One ensemble of every model of ``predictors`` (same features and model shape; e.g. one predictor
    per cross-validation fold). Their target scales may differ: each model's output is rescaled to the
    geometric mean of the scales through the head's last bias (the output is exp(head) times a prior)."""
    first = predictors[0]
    if any(p.features != first.features or p.config != first.config for p in predictors):
        raise ValueError("only predictors of one feature encoding and model shape merge into one ensemble")
    scale = float(np.exp(np.mean([np.log(p.target.scale) for p in predictors])))
    models = []
    for p in predictors:
        for m in p.models:
            m = copy.deepcopy(m)
            with torch.no_grad():
                m.head[-1].bias += math.log(p.target.scale / scale)
            models.append(m)
    return Predictor(models=models, features=first.features, target=TargetNorm(first.target.kind, scale),
                     profile=dict(first.profile), metadata={**first.metadata, "merged": len(predictors)})
