"""Accuracy prediction of NAS cells with NAR-Former V2 in its cell configuration (6 blocks,
layer-wise readout), trained with relative MSE, a pairwise ranking loss and an isomorphism-
consistency term (predictions invariant to relabelling intermediate nodes)."""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from narformer_tvm.errors import CheckpointError
from narformer_tvm.fileio import read_results, resume_results, write_atomically
from narformer_tvm.graph.cells import (
    Cell,
    CellData,
    cell_features,
    encode_cell,
    nb201_input_reaches_output,
    permuted,
)
from narformer_tvm.learn.metrics import kendall_tau, mape, spearman
from narformer_tvm.learn.train import optimizer, step
from narformer_tvm.model.batching import collate, size_buckets

CELL_CHECKPOINT = "narformer-tvm-cell-predictor"


@dataclass
class AccuracyOptions:
    d_model: int = 512  # hidden width
    n_layers: int = 6  # blocks (the paper's cell setting)
    n_groups: int = 8
    n_freqs: int = 16  # position code frequencies
    epochs: int = 300
    lr: float = 1e-4
    batch_size: int = 32
    rank_weight: float = 1.0  # pairwise ranking loss weight (0.1 gave tau 0.48 vs 0.63 in a short run)
    consistency_weight: float = 0.1  # isomorphism-consistency weight
    patience: int = 60  # epochs without validation-tau improvement
    backbone: str = "transformer"  # "gnn": the GraphSAGE baseline in the same harness
    precision: str = "auto"  # training matmuls: "fp32" | "bf16" (autocast) | "auto": bf16 where the CPU has it
    fusion: bool = True  # gate each block's readout by a learned weight (paper's fusion; NB201 tau +0.008), else sum
    ema: float = 0.0  # decay of an exponential moving average of the weights, validated and kept (0: off)
    block: str = "l2"  # the reference code's block (model.ModelConfig.block), its FFN scale from 1e-4: NB201
    #   tau +0.005 over "prenorm" (LayerNorm + residuals, the latency model's block) on each of 5 paired seeds
    dropout: float = 0.1  # in every block (the reference code's 0.05: NB201 tau 0.864 vs 0.872 on seed 0)
    gffn_norm: bool = False  # the reference code's GFFN: LayerNorm per group after each group linear, ReLU
    enhance_first: bool = False  # the reference code's order: the degree gate on each block's input, not its output
    readout_norm: bool = True  # LayerNorm each node before the readout sum (False: the reference code's raw mean)
    head: str = "reference"  # the reference code's head, two hidden layers of d_model, ReLU, dropout 0.05; ranked
    #   cells better than "gelu" (the latency model's head) on paired seeds (docs/results/nas.md)
    loss_form: str = "logistic"  # "logistic": logistic loss over ordered pairs, squared relative consistency gap
    #   | "reference": the reference code's L1 of shuffled-pair differences and L1 consistency gap (its weights 0.1, 0.5)
    seed: int = 0


PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_bf16() -> bool:
    """Native bf16 matrix instructions (AVX512-BF16 or AMX): without them bf16 autocast is slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolved(opts: AccuracyOptions) -> AccuracyOptions:
    """``opts`` with "auto" precision replaced by what this machine uses (bf16 where the CPU has it:
    faster, Kendall's tau unchanged; docs/results/nas.md)."""
    if opts.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {opts.precision!r}")
    if opts.precision != "auto":
        return opts
    return AccuracyOptions(**{**asdict(opts), "precision": "bf16" if cpu_has_bf16() else "fp32"})


def new_cell_model(opts: AccuracyOptions):
    import torch

    from narformer_tvm.model.narformer import ModelConfig, NARFormer

    torch.manual_seed(opts.seed)
    return NARFormer(ModelConfig(n_features=cell_features(opts.n_freqs), n_static=1, d_model=opts.d_model,
                                 n_layers=opts.n_layers, n_groups=opts.n_groups, backbone=opts.backbone,
                                 layerwise_readout=True, layer_fusion=opts.fusion, dropout=opts.dropout,
                                 block=opts.block, gffn_norm=opts.gffn_norm, enhance_first=opts.enhance_first,
                                 readout_norm=opts.readout_norm, head=opts.head,
                                 layer_scale=1e-4 if opts.block == "l2" else ModelConfig.layer_scale))


def predict_cells(model, cells: Sequence[Cell], n_freqs: int = 16, batch_size: int = 512) -> np.ndarray:
    import torch

    graphs = [encode_cell(c, n_freqs) for c in cells]
    out = np.zeros(len(graphs))
    model.eval()
    with torch.no_grad():
        for idx in size_buckets([g.n for g in graphs], batch_size):
            out[idx] = model(*collate([graphs[i] for i in idx]).inputs()).numpy()
    return out


def ranking_loss(pred, y):
    """Logistic loss over all ordered pairs in the batch whose true accuracies differ."""
    import torch

    dp = pred[:, None] - pred[None, :]
    dy = y[:, None] - y[None, :]
    mask = dy > 0
    if not mask.any():
        return pred.sum() * 0
    return torch.nn.functional.softplus(-dp[mask] * 20.0).mean()


def pair_difference_loss(pred, y, order):
    """L1 between predicted and true accuracy differences over one random pairing of the batch."""
    return ((pred - pred[order]) - (y - y[order])).abs().mean()


LOSS_FORMS = ("logistic", "reference")


def ema_update(decay: float):
    """AveragedModel's update with the decay warmed up as (1 + n) / (10 + n) over the first updates:
    a fixed 0.999 would keep ~30% of the first step's weights after 1,200 steps (NB101, 100 cells)."""

    def update(averaged, current, n_averaged):
        import torch

        d = min(decay, (1.0 + float(n_averaged)) / (10.0 + float(n_averaged)))
        with torch.no_grad():
            for a, c in zip(averaged, current):
                a.lerp_(c, 1.0 - d)

    return update


def train_accuracy(train_cells: Sequence[Cell], train_acc: np.ndarray, val_cells: Sequence[Cell], val_acc: np.ndarray,
                   opts: AccuracyOptions = AccuracyOptions(), progress: Callable[[str], None] | None = None):
    """Returns (model at the best validation tau, history of dicts)."""
    import torch

    opts = resolved(opts)
    if opts.loss_form not in LOSS_FORMS:
        raise ValueError(f"loss_form must be one of {', '.join(LOSS_FORMS)}, not {opts.loss_form!r}")
    reference = opts.loss_form == "reference"
    model = new_cell_model(opts)
    rng = np.random.default_rng(opts.seed)
    y_all = np.asarray(train_acc, dtype=np.float32)
    graphs = [encode_cell(c, opts.n_freqs) for c in train_cells]
    opt, sched = optimizer(model, opts.lr, 1e-2, opts.epochs * math.ceil(len(graphs) / opts.batch_size))
    averaged = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_update(opts.ema)) if opts.ema else None
    kept = averaged.module if averaged else model  # what is validated, selected and returned
    best = {"tau": -2.0, "state": None, "epoch": -1}
    history = []
    t0 = time.time()
    for epoch in range(opts.epochs):
        model.train()
        order = rng.permutation(len(graphs))
        total = 0.0
        for start in range(0, len(order), opts.batch_size):
            idx = order[start:start + opts.batch_size]
            batch = collate([graphs[i] for i in idx], y_all[idx])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=opts.precision == "bf16"):
                pred = model(*batch.inputs())
                loss = (((pred - batch.y) / batch.y) ** 2).mean()
                if opts.rank_weight:
                    rank = (pair_difference_loss(pred, batch.y, torch.from_numpy(rng.permutation(len(idx))))
                            if reference else ranking_loss(pred, batch.y))
                    loss = loss + opts.rank_weight * rank
                if opts.consistency_weight:
                    perm = collate([encode_cell(permuted(train_cells[i], rng), opts.n_freqs) for i in idx])
                    gap = model(*perm.inputs()) - pred
                    gap = gap.abs().mean() if reference else ((gap / batch.y) ** 2).mean()
                    loss = loss + opts.consistency_weight * gap
            total += step(model, opt, sched, loss) * len(idx)
            if averaged:
                averaged.update_parameters(model)
        tau = kendall_tau(predict_cells(kept, val_cells, opts.n_freqs), val_acc) if len(val_cells) > 1 else 0.0
        history.append({"epoch": epoch, "loss": total / len(graphs), "val_tau": tau})
        if tau > best["tau"]:
            best = {"tau": tau, "state": {k: v.clone() for k, v in kept.state_dict().items()}, "epoch": epoch}
        if progress:
            progress(f"epoch {epoch + 1}/{opts.epochs} loss {total / len(graphs):.4f} val tau {tau:.3f} "
                     f"(best {best['tau']:.3f} @ {best['epoch'] + 1}) {time.time() - t0:.0f}s")
        if epoch - best["epoch"] >= opts.patience:
            break
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    return model, history


VALIDATION_CELLS = {"nb201": 200, "nb101": 50}  # selection split after the training cells (NB101: a 1,000-cell subset)


def protocol_split(n: int, train_size: int, val_size: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train on the first ``train_size`` cells of a seeded permutation, validate on the next ``val_size``."""
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:train_size], perm[train_size:train_size + val_size]


def held_out(n: int, train: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Cells neither trained on nor used for model selection."""
    return np.setdiff1d(np.arange(n), np.concatenate([train, val]))


# Options added after protocol rows were saved, with the value the code used before: a saved run key
# that lacks one still names the same setting.
ADDED_OPTIONS = {"dropout": 0.1, "gffn_norm": False, "enhance_first": False, "readout_norm": True, "head": "gelu"}


def run_protocol(data: CellData, train_size: int, seeds: Sequence[int], opts: AccuracyOptions = AccuracyOptions(),
                 val_size: int = 200, progress: Callable[[str], None] | None = None,
                 checkpoint: str | Path | None = None, notice: Callable[[str], None] = warnings.warn) -> list[dict]:
    """Kendall's tau (and Spearman, MAPE) on all cells (NB201's protocol) and tau on the held-out
    cells (NB101's: the rest of the subset), one row per seed. ``checkpoint`` (a JSON file)
    keeps each finished seed, so an interrupted run resumes; a file of other settings is moved aside
    (``notice`` says where). Processes running different seeds may share it: each keeps the others' rows."""
    opts = resolved(opts)  # the checkpoint names the precision actually used
    key = {"cells": len(data.cells), "train_size": train_size, "val_size": val_size,
           "options": {k: v for k, v in asdict(opts).items() if k != "seed"}}
    path = Path(checkpoint) if checkpoint else None

    def same_run(state: dict) -> bool:
        saved = state.get("run")
        if isinstance(saved, dict) and isinstance(saved.get("options"), dict):
            saved = {**saved, "options": {**ADDED_OPTIONS, **saved["options"]}}
        return saved == key

    done = {"run": key, "rows": (resume_results(path, same_run, notice) or {}).get("rows", [])}
    rows = []
    for seed in seeds:
        row = next((r for r in done["rows"] if r["seed"] == seed), None)
        if row is None:
            tr, va = protocol_split(len(data.cells), train_size, val_size, seed)
            o = AccuracyOptions(**{**asdict(opts), "seed": seed})
            t0 = time.time()
            model, history = train_accuracy([data.cells[i] for i in tr], data.accuracy[tr], [data.cells[i] for i in va],
                                            data.accuracy[va], o, progress)
            seconds = time.time() - t0
            pred = predict_cells(model, data.cells, o.n_freqs)
            held = held_out(len(data.cells), tr, va)
            row = {"seed": seed, "train_size": train_size, "kendall_tau": kendall_tau(pred, data.accuracy),
                   "kendall_tau_held_out": kendall_tau(pred[held], data.accuracy[held]),
                   "spearman": spearman(pred, data.accuracy), "mape": mape(pred, data.accuracy),
                   "train_seconds": round(seconds, 1), "epochs_run": len(history)}
            done["rows"].append(row)
            if path:  # keep the rows another process running other seeds into the same file saved meanwhile
                mine = {r["seed"] for r in done["rows"]}
                theirs = (read_results(path, same_run) or {}).get("rows", []) if path.exists() else []
                done["rows"] = sorted(done["rows"] + [r for r in theirs if r["seed"] not in mine],
                                      key=lambda r: r["seed"])
                write_atomically(path, lambda tmp: tmp.write_text(json.dumps(done, indent=2)))
        rows.append(row)
    return rows


def calibrate(model, cells: Sequence[Cell], accuracy: np.ndarray, n_freqs: int = 16, points: int = 101) -> dict:
    """A monotone map from the model's outputs to accuracies: the quantiles of its predictions on the
    given (training) cells matched to the quantiles of their true accuracies.

    The ranking loss trains the order of the outputs, not their scale (raw outputs reach 150%); a
    straight line still overshoots 100% at the top, quantile matching cannot leave the seen range."""
    q = np.linspace(0.0, 1.0, points)
    pred = predict_cells(model, cells, n_freqs)
    return {"pred": np.quantile(pred, q).tolist(), "accuracy": np.quantile(np.asarray(accuracy, dtype=np.float64), q).tolist()}


def apply_calibration(calibration: dict | None, raw: np.ndarray) -> np.ndarray:
    """Raw outputs -> accuracies (``None``: unchanged, for checkpoints saved without a calibration)."""
    if not calibration:
        return np.asarray(raw)
    return np.interp(raw, calibration["pred"], calibration["accuracy"])


def save_cell_predictor(model, opts: AccuracyOptions, benchmark: str, path: str | Path, metadata: dict,
                        calibration: dict | None = None) -> None:
    import torch

    state = {"format": CELL_CHECKPOINT, "version": 1, "benchmark": benchmark, "options": asdict(opts),
             "model_config": model.cfg.to_dict(), "metadata": metadata, "calibration": calibration,
             "state_dict": model.state_dict()}
    write_atomically(path, lambda tmp: torch.save(state, tmp))


def load_cell_predictor(path: str | Path):
    import torch

    from narformer_tvm.model.narformer import ModelConfig, NARFormer

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CELL_CHECKPOINT or state.get("version") != 1:
        raise CheckpointError(f"{path}: not a narformer-tvm cell predictor (version 1)")
    model = NARFormer(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["state_dict"])
    model.eval()
    return model, AccuracyOptions(**state["options"]), state


NB201_SKELETON = {"c": 16, "n_cells": 5, "resolution": 32, "batch": 1}  # NAS-Bench-201's CIFAR network


def skeleton_jobs(archs: Sequence[str]) -> list:
    """Profiler jobs measuring each cell inside NAS-Bench-201's network (zoo family nb201)."""
    from narformer_tvm.measure.profiler import Job
    from narformer_tvm.measure.zoo import Variant

    jobs = []
    for i, arch in enumerate(archs):
        v = Variant("nb201", -3, i, {"arch": arch, **NB201_SKELETON})
        jobs.append(Job(key=v.key, name=f"nb201-cell-{i:05d}", family="nb201", variant=v.to_dict()))
    return jobs


def measured_latencies(db, archs: Sequence[str], cfg=None, progress: Callable | None = None,
                       include_noisy: bool = True) -> dict[str, float]:
    """Measure (or read back) the latency of each cell's network; arch -> ms for the successful ones."""
    from narformer_tvm.data.store import Store
    from narformer_tvm.measure.backends import MeasureConfig
    from narformer_tvm.measure.profiler import job_result, sweep

    cfg = cfg or MeasureConfig()
    jobs = skeleton_jobs(archs)
    with Store(db) as store:
        sweep(jobs, store, cfg, reference_every=0, progress=progress)
        rows = {arch: job_result(store, job, cfg) for arch, job in zip(archs, jobs)}
    return {arch: r["latency_ms"] for arch, r in rows.items()
            if r and r["latency_ms"] and (include_noisy or not r["noisy"])}


def pareto_front(accuracy: np.ndarray, latency: np.ndarray) -> list[int]:
    """Indices of the cells no other cell beats on both (higher accuracy, lower latency), fastest first."""
    order = np.lexsort((-np.asarray(accuracy), np.asarray(latency)))  # by latency, then accuracy descending
    front, best = [], -np.inf
    for i in order:
        if accuracy[i] > best:
            front.append(int(i))
            best = accuracy[i]
    return front


@dataclass
class ParetoResult:
    archs: list[str]
    predicted_accuracy: np.ndarray
    predicted_ms: np.ndarray
    front: list[int]  # indices into archs, fastest first
    measured_ms: dict[str, float]  # the front (and the training sample), measured
    table_accuracy: np.ndarray | None = None  # the benchmark's accuracy, to check the front against
    latency_tau: float | None = None  # predicted vs measured latency on the front


def nas_pareto(data: CellData, accuracy_model, accuracy_opts: AccuracyOptions, db, sample: int = 300,
               seed: int = 0, latency_opts: AccuracyOptions | None = None, cfg=None,
               progress: Callable[[str], None] | None = None, calibration: dict | None = None) -> ParetoResult:
    """Predict accuracy (a trained cell predictor, mapped through its ``calibration``) and latency (a
    cell predictor trained here on ``sample`` measured cells) of every NAS-Bench-201 cell, take the
    Pareto front, measure it."""
    archs = data.names
    say = progress or (lambda _m: None)
    runnable = np.array([nb201_input_reaches_output(a) for a in archs])  # the rest compute a constant
    rng = np.random.default_rng(seed)
    picked = [archs[i] for i in rng.permutation(len(archs)) if runnable[i]][:sample]
    say(f"measuring {len(picked)} sampled cells")
    lat = measured_latencies(db, picked, cfg, lambda k, i, n, m: say(f"measured {i}/{n}: {m}") if k == "done" else None)
    train = [a for a in picked if a in lat]
    if len(train) < 20:
        from narformer_tvm.errors import InputError

        raise InputError(f"only {len(train)} cells could be measured", hint="see the dataset for the failures")
    index = {a: i for i, a in enumerate(archs)}
    n_val = max(10, len(train) // 10)
    # No ranking term: printed milliseconds must be right in scale, not only in order.
    lo = latency_opts or AccuracyOptions(d_model=128, n_layers=3, n_groups=4, epochs=150, lr=5e-4, patience=30,
                                         rank_weight=0.0, seed=seed)
    say("training the cell-latency predictor")
    lat_model, _ = train_accuracy([data.cells[index[a]] for a in train[n_val:]], np.array([lat[a] for a in train[n_val:]]),
                                  [data.cells[index[a]] for a in train[:n_val]], np.array([lat[a] for a in train[:n_val]]),
                                  lo, progress)
    say("predicting every cell")
    acc = apply_calibration(calibration, predict_cells(accuracy_model, data.cells, accuracy_opts.n_freqs))
    ms = predict_cells(lat_model, data.cells, lo.n_freqs)
    front = pareto_front(np.where(runnable, acc, -np.inf), ms)
    say(f"measuring the {len(front)} cells of the predicted front")
    lat.update(measured_latencies(db, [archs[i] for i in front], cfg))
    meas = [lat.get(archs[i]) for i in front]
    pairs = [(ms[i], m) for i, m in zip(front, meas) if m]
    tau = kendall_tau(np.array([p for p, _ in pairs]), np.array([m for _, m in pairs])) if len(pairs) > 2 else None
    return ParetoResult(list(archs), acc, ms, front, lat, data.accuracy, tau)


def write_pareto_report(result: ParetoResult, out: Path) -> Path:
    """front.json, front.md and pareto.png (every cell predicted; the front, predicted and measured)."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    rows = [{"arch": result.archs[i], "predicted_accuracy": float(result.predicted_accuracy[i]),
             "table_accuracy": float(result.table_accuracy[i]) if result.table_accuracy is not None else None,
             "predicted_ms": float(result.predicted_ms[i]), "measured_ms": result.measured_ms.get(result.archs[i])}
            for i in result.front]
    (out / "front.json").write_text(json.dumps({"front": rows, "latency_tau_on_front": result.latency_tau}, indent=2))
    lines = ["| cell | predicted acc | table acc | predicted ms | measured ms |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| `{r['arch']}` | {100 * r['predicted_accuracy']:.2f}% | {100 * (r['table_accuracy'] or 0):.2f}% | "
              f"{r['predicted_ms']:.3f} | {r['measured_ms']:.3f} |" if r["measured_ms"] else
              f"| `{r['arch']}` | {100 * r['predicted_accuracy']:.2f}% | - | {r['predicted_ms']:.3f} | failed |" for r in rows]
    tau = f"{result.latency_tau:.3f}" if result.latency_tau is not None else "n/a"
    lines += ["", f"Kendall tau of predicted vs measured latency on the front: {tau}"]
    (out / "front.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter(result.predicted_ms, 100 * result.predicted_accuracy, s=2, alpha=0.3, label="every cell (predicted)")
    f = result.front
    ax.plot(result.predicted_ms[f], 100 * result.predicted_accuracy[f], "r.-", label="predicted front")
    meas = [(result.measured_ms[result.archs[i]], 100 * result.table_accuracy[i]) for i in f
            if result.measured_ms.get(result.archs[i]) and result.table_accuracy is not None]
    if meas:
        ax.plot(*zip(*meas), "gx", label="front: measured ms, table accuracy")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("CIFAR-10 accuracy (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=120)
    plt.close(fig)
    return out / "front.md"
