"""A tuning task's latency before any schedule of it is measured: ridge regression from the per-store
features of its design space (MetaSchedule's post-order-apply sketches, summed over stores and averaged
over sketches) to the log of the best latency a corpus measured for it. Whole-network tuning weighs
tasks by it (weight x predicted latency) to leave the negligible ones to their default schedules."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

FORMAT = "narformer-tvm-task-latency"


@dataclass
class TaskLatencyModel:
    mean: list  # per-feature centring of the training tasks
    scale: list  # per-feature spread (standardised inputs keep one ridge strength for all)
    weights: list
    bias: float
    ridge: float  # L2 strength it was fitted with
    tasks: int  # training tasks

    @classmethod
    def fit(cls, features: np.ndarray, log_seconds: np.ndarray, ridge: float = 1.0) -> "TaskLatencyModel":
        """``features`` (T, F) as ``design_space_features`` gives, ``log_seconds`` (T,) natural log."""
        mean, scale = features.mean(0), features.std(0) + 1e-6
        a = np.c_[(features - mean) / scale, np.ones(len(features))]  # (T, F + 1)
        reg = ridge * np.eye(a.shape[1])
        reg[-1, -1] = 0.0  # the level is not shrunk
        w = np.linalg.solve(a.T @ a + reg, a.T @ log_seconds)
        return cls(mean.tolist(), scale.tolist(), w[:-1].tolist(), float(w[-1]), ridge, len(features))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Seconds, one per row of ``features`` (T, F)."""
        z = (np.asarray(features) - np.array(self.mean)) / np.array(self.scale)
        return np.exp(z @ np.array(self.weights) + self.bias)

    def save(self, path: str | Path) -> None:
        from narformer_tvm.fileio import write_atomically

        text = json.dumps({"format": FORMAT, **asdict(self)}) + "\n"
        write_atomically(path, lambda tmp: tmp.write_text(text))

    @classmethod
    def load(cls, path: str | Path) -> "TaskLatencyModel":
        from narformer_tvm.fileio import read_model_json

        meta = read_model_json(path, FORMAT, "task-latency model",
                               "fit one with `narformer-tvm tunedb task-latency CORPUS --out FILE`")
        return cls(**{k: v for k, v in meta.items() if k != "format"})


def design_space_features(ms, mod, target) -> np.ndarray:
    """(F,) per-store features of ``mod``'s design space: summed over stores, averaged over sketches."""
    ctx = ms.TuneContext(mod=mod, target=target, space_generator="post-order-apply", task_name="task", rand_state=0)
    args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    spaces = ctx.generate_design_space()
    feats = ms.feature_extractor.PerStoreFeature().extract_from(ctx, [ms.MeasureCandidate(s, args) for s in spaces])
    return np.mean([f.numpy().sum(0) for f in feats], axis=0)


def corpus_tasks(work_dirs: Sequence[str | Path], progress: Callable[[str], None] | None = None):
    """(features (T, F), log best seconds (T,)) of every workload with a measured record in the
    MetaSchedule databases of ``work_dirs``."""
    from narformer_tvm.integrations.tvm_env import meta_schedule
    from narformer_tvm.integrations.tvm_records import database_files, median_seconds

    ms = meta_schedule()
    best: dict[str, tuple] = {}
    for d in work_dirs:
        wl, tr = database_files(d)
        for rec in ms.database.JSONDatabase(str(wl), str(tr), allow_missing=False).get_all_tuning_records():
            cost = median_seconds(rec.run_secs)
            if not 0 < cost < 1e9:  # failed runs are stored as 1e10
                continue
            key = ms.utils.shash2hex(rec.workload.mod)
            if key not in best or cost < best[key][2]:
                best[key] = (rec.workload.mod, rec.target, cost)
    rows, costs = [], []
    for k, (mod, target, cost) in enumerate(best.values()):
        if progress:
            progress(f"task {k + 1}/{len(best)}")
        try:
            rows.append(design_space_features(ms, mod, target))
        except Exception:  # a workload MetaSchedule can no longer sketch: left out
            continue
        costs.append(np.log(cost))
    return np.array(rows, dtype=np.float64), np.array(costs)


def cross_validate(features: np.ndarray, log_seconds: np.ndarray, ridge: float = 1.0, folds: int = 5,
                   seed: int = 0) -> dict:
    """Held-out accuracy over ``folds`` random folds of the tasks: Spearman rank correlation and the
    share predicted within 2x."""
    from narformer_tvm.learn.metrics import spearman

    fold = np.random.default_rng(seed).integers(0, folds, len(features))
    pred = np.zeros(len(features))
    for k in range(folds):
        m = fold == k
        if m.any() and (~m).any():
            pred[m] = np.log(TaskLatencyModel.fit(features[~m], log_seconds[~m], ridge).predict(features[m]))
    return {"tasks": len(features), "spearman": spearman(pred, log_seconds),
            "within_2x": float(np.mean(np.abs(pred - log_seconds) < np.log(2)))}


def heavy_tasks(shares: Sequence[float], drop: float) -> list[int]:
    """Indices of the tasks to tune: the largest predicted shares of the network's latency until at most
    ``drop`` of it is left (the rest keep their default schedules); never none."""
    order = np.argsort(shares)[::-1]
    total = left = float(np.sum(shares))
    kept: list[int] = []
    for i in order:
        if kept and left <= drop * total:
            break
        kept.append(int(i))
        left -= shares[i]
    return sorted(kept)
