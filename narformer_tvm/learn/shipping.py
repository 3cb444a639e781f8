"""Writing hardware profiles: a predictor, its profile.json and the metrics that belong to it."""
from __future__ import annotations

import json
from pathlib import Path

from narformer_tvm.data.labels import label_options
from narformer_tvm.errors import InputError
from narformer_tvm.model.export import export_onnx
from narformer_tvm.model.predictor import Predictor
from narformer_tvm.profiles import EXTRA_PREDICTORS


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


ONNX_PREDICTOR = "predictor.onnx"
PUBLISHED_DB = "published"  # dataset of published networks measured on the profile's hardware, if present


def write_profile(predictor: Predictor, folder: str | Path, name: str | None = None) -> Path:
    """A hardware profile: profile.json (target, runtime, threads, fingerprint, metrics), predictor.pt
    (the torch checkpoint, for training on) and predictor.onnx (what ``estimate`` runs, without torch).

    Where the folder holds a ``published`` dataset, the predictor is scored on those networks too (profile.json's
    ``published`` block), so the numbers a profile reports always belong to the predictor beside them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = name or folder.name
    predictor.profile = {**predictor.profile, "name": name}
    predictor.save(folder / "predictor.pt")
    export_onnx(predictor, folder / ONNX_PREDICTOR)
    # Keep the other predictors an existing profile names (add_to_profile); its metrics are the old model's.
    old = json.loads((folder / "profile.json").read_text()) if (folder / "profile.json").exists() else {}
    meta = {**{k: v for k, v in old.items() if k in EXTRA_PREDICTORS}, "name": name, "predictor": "predictor.pt",
            "onnx": ONNX_PREDICTOR,
            **{k: v for k, v in predictor.profile.items() if k != "name"},
            "metrics": predictor.metadata.get("test"), "train_samples": predictor.metadata.get("train_samples")}
    for key in ("recalibrated", "finetuned_from"):  # the weights above came from another predictor
        if key in predictor.metadata:
            meta[key] = predictor.metadata[key]
    if (folder / PUBLISHED_DB).exists():
        meta["published"] = published_metrics(predictor, folder)
    if (cov := predictor.metadata.get("coverage") or dataset_coverage(predictor.profile)) is not None:
        meta["coverage"] = cov  # what `estimate` compares a model with, to warn of extrapolation
    (folder / "profile.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return folder / "profile.json"


def published_metrics(predictor, folder: Path) -> dict:
    """The predictor on the profile's published networks that are no graph of its training data."""
    from narformer_tvm.learn.evaluate import score_predictor
    from narformer_tvm.learn.samples import load_samples, unseen_in_training

    samples, _ = load_samples(folder / PUBLISHED_DB, **label_options(predictor.profile))
    samples, seen = unseen_in_training(samples, predictor.profile)
    return {"dataset": PUBLISHED_DB, "left_out_as_in_training": seen,
            **score_predictor(predictor, samples, "published").metrics()}


def dataset_coverage(profile: dict) -> dict | None:
    """``estimate.coverage`` of the training split of the dataset a profile's predictor trained on, for
    a predictor that does not record its own (None: the dataset is not here)."""
    from narformer_tvm.estimate import coverage
    from narformer_tvm.learn.samples import dataset_path, load_samples
    from narformer_tvm.learn.splits import split_same_distribution

    path = dataset_path(profile["dataset"]) if profile.get("dataset") else None
    if path is None:
        return None
    samples, _ = load_samples(path, **label_options(profile))
    return coverage([samples[i].table for i in split_same_distribution(samples)[0]])


def rescore_profile(folder: str | Path) -> dict:
    """profile.json's metrics recomputed for the predictor beside it, as the rules stand now (graph
    duplicates merged, training graphs left out of the published networks): the held-out split of its
    dataset and the published networks. The predictor files are not touched, nor is the coverage
    (what it trained on; a dataset grown since holds models it never saw)."""
    from narformer_tvm.learn.evaluate import score_predictor
    from narformer_tvm.learn.samples import dataset_path, load_samples
    from narformer_tvm.learn.splits import split_same_distribution
    from narformer_tvm.model.load import load_predictor

    folder = Path(folder)
    meta = json.loads((folder / "profile.json").read_text())
    predictor = load_predictor(folder / meta.get("onnx", meta["predictor"]))
    path = dataset_path(meta["dataset"]) if meta.get("dataset") else None
    try:
        samples, cfg = load_samples(path, **label_options(meta)) if path else (None, None)
    except InputError:  # not one configuration's dataset: nothing to score on
        samples = None
    if samples:
        test = [samples[i] for i in split_same_distribution(samples)[1]]
        meta["metrics"] = {"split": "same", "graph_duplicates_merged": cfg["graph_duplicates"],
                           **score_predictor(predictor, test, "held-out").metrics()}
    if predictor.metadata.get("coverage"):
        meta["coverage"] = predictor.metadata["coverage"]
    if (folder / PUBLISHED_DB).exists():
        meta["published"] = published_metrics(predictor, folder)
    (folder / "profile.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return meta