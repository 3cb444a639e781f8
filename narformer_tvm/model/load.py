"""Loading a predictor file of either kind: ONNX (no torch needed) or a torch checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

# What a profile's profile.json keeps up to date about its predictor; a checkpoint keeps what was true
# when it was saved (a dataset folder may move since).
PROFILE_RECORD = ("dataset", "labels")


def load_predictor(path: str | Path):
    """An ``OnnxPredictor`` for a .onnx file, else a torch ``Predictor`` (imports torch). A file that a
    profile.json beside it names takes that profile's record of its dataset and labels."""
    path = Path(path)
    if path.suffix == ".onnx":
        from narformer_tvm.model.onnx_predictor import OnnxPredictor

        predictor = OnnxPredictor.load(path)
    else:
        from narformer_tvm.model.predictor import Predictor

        predictor = Predictor.load(path)
    predictor.profile = {**predictor.profile, **_profile_record(path)}
    return predictor


def _profile_record(path: Path) -> dict:
    meta_path = path.parent / "profile.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return {}
    if path.name not in (meta.get("predictor"), meta.get("onnx")):
        return {}
    return {k: meta[k] for k in PROFILE_RECORD if k in meta}
