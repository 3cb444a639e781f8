"""Training latency predictors: samples from a dataset, splits, the training loop (relative-error
loss, AdamW with warm-up and cosine decay, early stopping on a validation split, resumable
checkpoints), ensembles and few-shot fine-tuning."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from narformer_tvm.fileio import write_atomically
from narformer_tvm.graph.tokens import (
    STATIC,
    EncodedGraph,
    FeatureConfig,
    encode_table,
    kind_counts,
    static_count,
)
from narformer_tvm.learn.metrics import mape
from narformer_tvm.learn.samples import Sample
from narformer_tvm.model.batching import collate, size_buckets


@dataclass
class FitConfig:
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 32
    warmup: float = 0.05  # fraction of steps with linear warm-up
    loss: str = "relative"  # "relative": |pred - y| / y, the MAPE | "log": MSE of log latencies
    patience: int = 15  # epochs without validation improvement before stopping
    seed: int = 0


def _static_counts(s: Sample) -> dict:
    """FLOPs and memory access back from the table's log-scaled static features."""
    st = s.table.static.astype(np.float64)
    return {k: static_count(st[STATIC.index(f"log_{k}")]) for k in ("flops", "memory", "macs")}


def relative_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """w minimising sum((x w / y - 1)^2): least squares on the relative error, columns scaled for
    conditioning (counts span orders of magnitude beside a column of ones)."""
    scale = np.abs(x).max(0) + 1e-12
    return np.linalg.lstsq((x / scale) / y[:, None], np.ones(len(y)), rcond=None)[0] / scale


@dataclass
class LinearBaseline:
    """latency = w . [counts, 1], fitted to minimise the squared *relative* error."""

    features: tuple[str, ...]
    w: np.ndarray | None = None

    def _x(self, samples):
        return np.array([[_static_counts(s)[f] for f in self.features] + [1.0] for s in samples])

    def fit(self, samples: Sequence[Sample]) -> "LinearBaseline":
        self.w = relative_lstsq(self._x(samples), np.array([s.latency_ms for s in samples]))
        return self

    def predict(self, samples: Sequence[Sample]) -> np.ndarray:
        return np.maximum(self._x(samples) @ self.w, 1e-6)


def loss_fn(kind: str, pred, y):
    if kind == "relative":
        return ((pred - y).abs() / y.clamp_min(1e-6)).mean()
    if kind == "log":
        return ((pred.clamp_min(1e-9).log() - y.clamp_min(1e-9).log()) ** 2).mean()
    raise ValueError(f"unknown loss {kind!r}; use relative or log")


def optimizer(model, lr: float, weight_decay: float, steps: int, warmup: float = 0.05):
    """AdamW with linear warm-up over ``warmup`` of the steps, then cosine decay to zero."""
    import torch

    # fused: one kernel for all parameters; several times faster per step for the cell model (docs/results/nas.md)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    warm = max(1, int(warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, steps - warm)))))
    return opt, sched


def step(model, opt, sched, loss) -> float:
    """One optimisation step with gradient clipping; returns the loss value."""
    import torch

    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    sched.step()
    return loss.item()


def fit(model, graphs: Sequence[EncodedGraph], targets: Sequence[float], cfg: FitConfig = FitConfig(),
        on_epoch: Callable[[int, float], bool | None] | None = None, state: dict | None = None) -> list[float]:
    """Train ``model`` in place on normalised ``targets``; returns the mean training loss per epoch.

    ``on_epoch(epoch, loss)`` may return True to stop. ``state`` (optimizer, scheduler, epoch) makes
    the loop resumable: it is updated after every epoch.
    """
    import torch

    torch.manual_seed(cfg.seed)
    y = np.asarray(targets, dtype=np.float32)
    opt, sched = optimizer(model, cfg.lr, cfg.weight_decay, cfg.epochs * math.ceil(len(graphs) / cfg.batch_size),
                           cfg.warmup)
    start = 0
    if state and "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = state["epoch"] + 1
    history = list(state.get("history", [])) if state else []
    for epoch in range(start, cfg.epochs):
        rng = np.random.default_rng(cfg.seed * 100003 + epoch)
        model.train()
        total, count = 0.0, 0
        for idx in size_buckets([g.n for g in graphs], cfg.batch_size, rng):
            batch = collate([graphs[i] for i in idx], y[idx])
            total += step(model, opt, sched, loss_fn(cfg.loss, model(*batch.inputs()), batch.y)) * len(idx)
            count += len(idx)
        history.append(total / count)
        if state is not None:
            state.update(optimizer=opt.state_dict(), scheduler=sched.state_dict(), epoch=epoch, history=history)
        if on_epoch is not None and on_epoch(epoch, history[-1]):
            break
    model.eval()
    return history


@dataclass
class TrainOptions:
    model: dict = field(default_factory=dict)  # ModelConfig overrides (d_model, n_layers, backbone, ablations)
    features: dict = field(default_factory=dict)  # FeatureConfig overrides (op/attr encoding, n_freqs)
    fit: FitConfig = field(default_factory=FitConfig)
    ensemble: int = 1  # models with different seeds; their spread is the uncertainty


def member_state_path(checkpoint: str | Path, k: int) -> Path:
    """Where ensemble member ``k`` of a training run keeps its resumable state (one file per member, so that
    processes training different members of one ensemble never write the same file)."""
    return Path(f"{checkpoint}.member{k}.state")


def _member_state(path: Path | None) -> dict:
    import torch

    return torch.load(path, weights_only=False) if path and path.exists() else {}


def train_predictor(train: Sequence[Sample], val: Sequence[Sample], opts: TrainOptions = TrainOptions(),
                    checkpoint: str | Path | None = None, progress: Callable[[str], None] | None = None,
                    init=None, members: Sequence[int] | None = None):
    """Train (or fine-tune ``init``, a Predictor) with early stopping on ``val``; returns the Predictor
    holding the best epoch of each ensemble member. ``checkpoint`` makes it resumable.

    ``members`` (with ``checkpoint``): train only these ensemble members, e.g. one per process on a
    core each; members another process finished are read from their state files. Returns None while
    some member is neither trained here nor finished elsewhere."""
    import torch

    from narformer_tvm.model.predictor import Predictor, TargetNorm, new_predictor

    if init is not None:
        pred = init
        feats = pred.features
        # The weights change from here on: what init was, trained on what, goes with them.
        base = {k: pred.metadata[k] for k in ("train_samples", "recalibrated", "finetuned_from") if k in pred.metadata}
        pred.metadata = {k: v for k, v in pred.metadata.items() if k not in ("recalibrated", "test")}
        pred.metadata["finetuned_from"] = {**base, "members": len(pred.models)}
        if opts.ensemble > len(pred.models):  # an ensemble from one model: each member its own seed from the same start
            pred.models = [copy.deepcopy(pred.models[k % len(pred.models)]) for k in range(opts.ensemble)]
    else:
        feats = FeatureConfig(**opts.features)
        pred = new_predictor(feats, ensemble=opts.ensemble, seed=opts.fit.seed, **opts.model)
        median = float(np.median([s.latency_ms for s in train]))
        pred.target = TargetNorm("ratio", median)
        if opts.model.get("readout") in ("flops_mac", "roofline"):
            prior = LinearBaseline(("flops", "memory")).fit(train)
            for m in pred.models:  # the fit in GFLOPs / GB and the target units
                m.prior_w.copy_(torch.tensor(prior.w * np.array([1e9, 1e9, 1.0]) / median))
        elif opts.model.get("readout") == "by_kind":
            w = relative_lstsq(np.array([kind_counts(s.table) for s in train]), np.array([s.latency_ms for s in train]))
            for m in pred.models:
                m.prior_w.copy_(torch.tensor(w / median))
    loss_kind = opts.fit.loss
    g_train = [encode_table(s.table, feats) for s in train]
    g_val = [encode_table(s.table, feats) for s in val]
    y_train = pred.target.encode(np.array([s.latency_ms for s in train]))
    y_val = np.array([s.latency_ms for s in val])
    if members is not None and not checkpoint:
        raise ValueError("training a subset of ensemble members needs a checkpoint to share them through")
    t0 = time.time()
    missing = []
    for k, model in enumerate(pred.models):
        state_path = member_state_path(checkpoint, k) if checkpoint else None
        member = _member_state(state_path)
        if member.get("done"):
            model.load_state_dict(member["best_weights"])
            continue
        if members is not None and k not in members:
            missing.append(k)
            continue
        if "weights" in member:
            model.load_state_dict(member["weights"])
        best = {"mape": member.get("best_mape", math.inf), "weights": member.get("best_weights"),
                "epoch": member.get("best_epoch", -1)}
        fit_state = member.get("fit", {})
        cfg = replace(opts.fit, seed=opts.fit.seed + k, loss=loss_kind)

        def on_epoch(epoch, loss, k=k, best=best, fit_state=fit_state, state_path=state_path):
            single = Predictor([model], feats, pred.target)
            val_mape = mape(single.predict_encoded(g_val)[0], y_val) if g_val else loss
            model.train()
            if val_mape < best["mape"]:
                best.update(mape=val_mape, weights={n: t.clone() for n, t in model.state_dict().items()}, epoch=epoch)
            rate = (epoch + 1 - fit_state.get("start_epoch", 0)) * len(g_train) / max(1e-9, time.time() - t0)
            if progress:
                progress(f"model {k + 1}/{len(pred.models)} epoch {epoch + 1}/{cfg.epochs} loss {loss:.4f} "
                         f"val MAPE {100 * val_mape:.2f}% (best {100 * best['mape']:.2f}% @ {best['epoch'] + 1}) "
                         f"{rate:.0f} samples/s")
            if state_path:
                member = {"weights": model.state_dict(), "fit": fit_state, "best_mape": best["mape"],
                          "best_weights": best["weights"], "best_epoch": best["epoch"]}
                write_atomically(state_path, lambda tmp: torch.save(member, tmp))
            return epoch - best["epoch"] >= cfg.patience

        fit_state.setdefault("start_epoch", fit_state.get("epoch", -1) + 1)
        fit(model, g_train, y_train, cfg, on_epoch, fit_state)
        if best["weights"] is not None:
            model.load_state_dict(best["weights"])
        if state_path:
            done = {"done": True, "best_weights": model.state_dict()}
            write_atomically(state_path, lambda tmp: torch.save(done, tmp))
    for k in list(missing):  # finished by another process while this one trained
        member = _member_state(member_state_path(checkpoint, k))
        if member.get("done"):
            pred.models[k].load_state_dict(member["best_weights"])
            missing.remove(k)
    if missing:
        return None
    for m in pred.models:
        m.eval()
    from narformer_tvm.estimate import coverage, merge_coverage

    # What `estimate` compares a model with to warn of extrapolation: every model the weights learnt from.
    seen = merge_coverage(pred.metadata.get("coverage"), coverage([s.table for s in [*train, *val]]))
    pred.metadata = {**pred.metadata, "train_samples": len(train), "val_samples": len(val), "coverage": seen,
                     "train_seconds": round(time.time() - t0, 1),
                     "val_mape": mape(pred.predict_encoded(g_val)[0], y_val) if g_val else None,
                     "options": {"model": opts.model, "features": opts.features, "fit": asdict(opts.fit),
                                 "ensemble": opts.ensemble}}
    if checkpoint:
        for k in range(len(pred.models)):  # a process finishing beside this one may have unlinked them first
            member_state_path(checkpoint, k).unlink(missing_ok=True)
    return pred


def predict_samples(pred, samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    return pred.predict_encoded([encode_table(s.table, pred.features) for s in samples])


def recalibrate(pred, samples: Sequence[Sample]):
    """The predictor unchanged but for one factor on every prediction: the median of measured over
    predicted on ``samples``. Where a predictor ranks well but its labels sat at another level (the same
    hardware measured another way, or a close one), this needs few measurements and cannot overfit them."""
    if not samples:
        raise ValueError("recalibrating needs at least one measured sample")
    factor = float(np.median(np.array([s.latency_ms for s in samples]) / predict_samples(pred, samples)[0]))
    pred.target.scale *= factor
    pred.metadata["recalibrated"] = {"factor": factor, "samples": len(samples)}
    return pred
