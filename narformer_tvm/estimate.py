"""Predicting latency of ONNX files with a shipped hardware profile or a checkpoint."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import InputError, NarformerError, PredictorNotFoundError
from .graph import OpGraph, build_graph
from .predictor import Predictor

# ONNX Runtime's default CPU configuration, one profile per CPU generation measured; `estimate` takes the
# one whose hardware matches this machine, else the first (and warns).
DEFAULT_PROFILES = ("cpu-onnxruntime", "cpu-onnxruntime-zen5")
DEFAULT_PROFILE = DEFAULT_PROFILES[0]


def profile_dirs() -> list[Path]:
    """Where hardware profiles are looked up, first match wins."""
    dirs = []
    if os.environ.get("NARFORMER_PROFILES"):
        dirs += [Path(p) for p in os.environ["NARFORMER_PROFILES"].split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parent.parent / "profiles")  # source checkout / editable install
    dirs.append(Path(sys.prefix) / "share" / "narformer-tvm" / "profiles")
    return dirs


def list_profiles() -> dict[str, Path]:
    """Profile name -> its folder, for every folder holding a profile.json."""
    found: dict[str, Path] = {}
    for d in profile_dirs():
        if d.is_dir():
            for p in sorted(d.glob("*/profile.json")):
                found.setdefault(p.parent.name, p.parent)
    return found


def default_profile() -> str:
    """The first of DEFAULT_PROFILES trained on hardware like this machine's, else the first installed."""
    profiles = list_profiles()
    installed = [name for name in DEFAULT_PROFILES if name in profiles] or [DEFAULT_PROFILE]
    for name in installed:
        fp = json.loads((profiles[name] / "profile.json").read_text()).get("fingerprint")
        if fp and not hardware_differences(fp):
            return name
    return installed[0]


def _profile_checkpoint(spec: str | None, field: str, missing, default: str | None = None) -> Path:
    """The checkpoint ``spec`` names: a file, or the one a hardware profile's ``field`` names
    (``default`` if absent; None = the default profile). ``missing(folder, name)`` is the error when
    the profile has no such file."""
    spec = spec or (default_profile() if field == "predictor" else DEFAULT_PROFILE)
    if Path(spec).is_file():
        return Path(spec)
    profiles = list_profiles()
    if spec in profiles:
        name = json.loads((profiles[spec] / "profile.json").read_text()).get(field, default)
        if name and (profiles[spec] / name).is_file():
            return profiles[spec] / name
        raise missing(profiles[spec], name)
    names = ", ".join(profiles) or "none installed"
    raise PredictorNotFoundError(
        f"no predictor {spec!r}: not a file, and no hardware profile of that name (profiles: {names})",
        hint="train one on measured latencies (`narformer-tvm profile` then `narformer-tvm train --out "
             "predictor.pt`) and pass --predictor predictor.pt")


def resolve_predictor(spec: str | None) -> Path:
    """A checkpoint path from ``--predictor`` (a file or a profile name; None = default profile)."""
    return _profile_checkpoint(spec, "predictor", lambda folder, name: PredictorNotFoundError(
        f"profile {folder.name!r} names {folder / name}, which does not exist",
        hint="reinstall narformer-tvm or retrain the profile"), default="predictor.pt")


def resolve_ort_predictor(spec: str | None) -> Path:
    """The configuration-aware predictor behind ``tune-ort``: a file, or a profile's ``ort_configs``."""
    return _profile_checkpoint(spec, "ort_configs", lambda folder, name: PredictorNotFoundError(
        f"hardware profile {folder.name!r} has no configuration-aware predictor for tune-ort",
        hint="collect data with `narformer-tvm profile --zoo all --ort-candidates 3 --db D` and train it with "
             f"`narformer-tvm train --task ort-configs --db D --out P --profile-dir {folder}`"))


EXTRA_PREDICTORS = ("ort_configs",)  # profile.json fields naming further checkpoints in the folder


def add_to_profile(folder: str | Path, field: str, checkpoint: str | Path) -> Path:
    """Copy ``checkpoint`` into a hardware profile folder and name it in profile.json under ``field``."""
    import shutil

    folder = Path(folder)
    meta_path = folder / "profile.json"
    if not meta_path.is_file():
        raise InputError(f"{folder}: no profile.json", hint="write the profile first with `train --profile-dir`")
    meta = json.loads(meta_path.read_text())
    name = f"{field.replace('_', '-')}.pt"
    if Path(checkpoint).resolve() != (folder / name).resolve():
        shutil.copyfile(checkpoint, folder / name)
    meta[field] = name
    meta_path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return meta_path


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


def estimate(paths: Sequence[str | Path], predictor: Predictor, input_shapes: dict | None = None,
             batch_size: int | None = None) -> list[Estimate]:
    """Predict every model; a model that cannot be read gets its error, the others still run."""
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


PUBLISHED_DB = "published.db"  # published networks measured on the profile's hardware, if its folder has them


def labels_corrected(profile: dict) -> bool | str:
    """Whether a predictor's profile (or a load_samples configuration) has regime-corrected labels
    (dataset.regime_factor: True; dataset.sitting_factor: "sitting"), as load_samples' ``regime_correct``
    takes it: a predictor's metrics are on the labels it learned."""
    from .dataset import CORRECTED_LABELS, SITTING_CORRECTED_LABELS

    labels = profile.get("labels", "")
    return "sitting" if labels.startswith(SITTING_CORRECTED_LABELS) else labels.startswith(CORRECTED_LABELS)


def label_options(profile: dict) -> dict:
    """load_samples' keyword arguments for the labels a predictor learned (its profile's ``labels``)."""
    from .dataset import MEAN_OVER_PASSES

    return {"regime_correct": labels_corrected(profile),
            "mean_passes": profile.get("labels", "").endswith(MEAN_OVER_PASSES)}


def write_profile(predictor: Predictor, folder: str | Path, name: str | None = None) -> Path:
    """A hardware profile: profile.json (target, runtime, threads, fingerprint, metrics) + predictor.pt.

    Where the folder holds ``published.db``, the predictor is scored on those networks too (profile.json's
    ``published`` block), so the numbers a profile reports always belong to the predictor beside them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = name or folder.name
    predictor.profile = {**predictor.profile, "name": name}
    predictor.save(folder / "predictor.pt")
    # Keep the other predictors an existing profile names (add_to_profile); its metrics are the old model's.
    old = json.loads((folder / "profile.json").read_text()) if (folder / "profile.json").exists() else {}
    meta = {**{k: v for k, v in old.items() if k in EXTRA_PREDICTORS}, "name": name, "predictor": "predictor.pt",
            **{k: v for k, v in predictor.profile.items() if k != "name"},
            "metrics": predictor.metadata.get("test"), "train_samples": predictor.metadata.get("train_samples")}
    for key in ("recalibrated", "finetuned_from"):  # the weights above came from another predictor
        if key in predictor.metadata:
            meta[key] = predictor.metadata[key]
    if (folder / PUBLISHED_DB).is_file():
        from .evaluate import score_predictor
        from .train import load_samples

        samples, _ = load_samples(folder / PUBLISHED_DB, **label_options(predictor.profile))
        meta["published"] = {"dataset": PUBLISHED_DB, **score_predictor(predictor, samples, "published").metrics()}
    (folder / "profile.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return folder / "profile.json"


def hardware_differences(fp: dict) -> list[str]:
    """How this machine differs from the one a fingerprint describes (keys it lacks are not compared)."""
    from .backends import gpu_name, hardware

    here = hardware()
    if "gpu" in fp:
        here["gpu"] = gpu_name()
    return [f"{k}: trained on {fp[k]!r}, this machine {v!r}" for k, v in here.items() if fp.get(k) not in (None, v)]


def fingerprint_mismatch(predictor: Predictor) -> str | None:
    """A warning when this machine differs from the one the predictor's training data came from."""
    fp = predictor.profile.get("fingerprint")
    diffs = hardware_differences(fp) if fp else []
    if not diffs:
        return None
    return (f"predictor {predictor.profile.get('name', '')!r} was trained for other hardware ({'; '.join(diffs)}); "
            "latencies are for that hardware, not this machine")
