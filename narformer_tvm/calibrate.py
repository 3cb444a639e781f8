"""From new hardware to a trustworthy ``estimate`` in one command: profile a compact calibration set
within a time budget, adapt a shipped predictor to it, and say how accurate the result is here.

The calibration set (``calibration_set.json``, made by examples/make_calibration_set.py) is ordered so
that any prefix is spread over op mix and scale; models are generated on the fly. A quarter of the
measured rows (by a hash of the model) is held out for the accuracy printed at the end; the rest fit
and judge the adaptations by 4-fold cross-validation, so that every one of them validates.
Adaptations are log-linear maps of the base predictor's output (latency = exp(a) * base ** b): ``base`` (none), ``scaled`` (a only) and
``loglinear`` (a and b); ``descriptors``, the log-linear map times a correction linear in the graph's
shape (size, intensity, the FLOP and byte shares of dense and grouped convolutions: a CPU's relative
costs of kinds of work differ from the base's); and, where torch and the base's checkpoint are
installed, ``finetune`` (the base's weights trained on from the rows) and ``scratch`` (a predictor
of the base's shape trained from nothing on them): one model per fold, each stopping early on its held
fold, kept as an ensemble. The unadapted base is a candidate only on the base's own CPU and configuration. The
simplest adaptation whose cross-validated MAPE is within one standard error of the lowest (``choose``)
is scored once on the held-out rows.
"""
from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from narformer_tvm.errors import InputError
from narformer_tvm.learn.metrics import relative_errors

CALIBRATION_SET = Path(__file__).resolve().parent / "calibration_set.json"
METHODS = ("base", "scaled", "loglinear", "descriptors")
RIDGE = 4.0  # ridge penalty of the descriptors correction, in rows of standardised features
MIN_MODELS = 12  # fewer measured models than this cannot be split meaningfully
FOLDS = 4  # cross-validation folds of the rows not held out: each validates once, so the choice sees them all
FOLD_ROWS = 200  # up to this many rows, trained adaptations train once per fold; beyond, on the first fold
#   only: a quarter of many rows validates well enough, and four trainings would take too long
REFERENCE_EVERY = 40  # models between re-measurements of the profiler's reference network (and one at the
#   end): a machine whose speed moves while it is calibrated gets a warning, not a silently shifted predictor
PROBE_LEVEL_ROWS = 21  # rows whose regime probes make one row's probe level: single probes scatter by several percent
FINETUNE = {"epochs": 40, "patience": 8, "lr": 2e-4, "batch_size": 16}  # small steps: the base already ranks well
SCRATCH = {"epochs": 60, "patience": 15, "lr": 5e-4, "batch_size": 16}


def calibration_variants(limit: int | None = None) -> list:
    """The shipped calibration list as zoo Variants, in coverage order; corpus families only where
    Hugging Face transformers is installed."""
    from narformer_tvm.measure.corpus import CORPUS
    from narformer_tvm.measure.zoo import Variant

    have_hf = importlib.util.find_spec("transformers") is not None
    items = json.loads(CALIBRATION_SET.read_text())
    out = [Variant(d["family"], d["seed"], d["index"], d["raw"]) for d in items
           if have_hf or d["family"] not in CORPUS]
    return out[:limit] if limit else out


def held_out(keys: list[str]) -> np.ndarray:
    """Which rows hold out for the accuracy printed at the end: a quarter, by a hash of the model (every
    fourth in order where few rows hash unluckily)."""
    test = np.array([zlib.crc32(k.encode()) % 4 == 0 for k in keys], dtype=bool)
    if test.sum() < 2 or (~test).sum() < 2 * FOLDS:
        test = np.arange(len(keys)) % 4 == 0
    return test


def folds_of(keys: list[str], k: int = FOLDS) -> np.ndarray:
    """Cross-validation fold of each row: rows ordered by a hash of their model and dealt round, so
    that folds differ in size by one at most."""
    order = np.argsort([zlib.crc32(f"fold:{key}".encode()) for key in keys], kind="stable")
    fold = np.empty(len(keys), dtype=int)
    fold[order] = np.arange(len(keys)) % k
    return fold


def fit_method(method: str, pred: np.ndarray, true: np.ndarray, shape: np.ndarray | None = None) -> dict:
    """The calibration ``method`` fitted to base predictions ``pred`` and measurements ``true``
    (``shape``: the rows' shape_descriptors, for ``descriptors``)."""
    lp, lt = np.log(pred), np.log(true)
    if method == "base" or len(pred) == 0:
        return {"method": method, "log_scale": 0.0, "exponent": 1.0}
    if method == "scaled":
        return {"method": method, "log_scale": float(np.median(lt - lp)), "exponent": 1.0}
    if len(pred) < 3 or np.ptp(lp) < 1e-6:
        return {"method": method, "log_scale": float(np.median(lt - lp)), "exponent": 1.0}
    b, a = np.polyfit(lp, lt, 1)
    b = float(np.clip(b, 0.5, 1.5))  # a few points must not turn the predictor's order around
    cal = {"method": method, "log_scale": float(np.median(lt - b * lp)), "exponent": b}
    if method == "descriptors" and shape is not None and len(pred) >= 2 * (1 + shape.shape[1]):
        cal.update(_fit_correction(np.column_stack([lp, shape]), lt - cal["log_scale"] - b * lp))
        cal["log_scale"] += cal.pop("offset")
    return cal


def _fit_correction(x: np.ndarray, residual: np.ndarray) -> dict:
    """Ridge regression of the log-linear map's residuals on standardised descriptors; the correction
    is later clipped to the range it took on these rows, so that a model unlike them is not pushed
    beyond what was measured."""
    mean, std = x.mean(0), x.std(0)
    std[std < 1e-9] = 1.0
    z = (x - mean) / std
    w = np.linalg.solve(z.T @ z + RIDGE * np.eye(z.shape[1]), z.T @ (residual - residual.mean()))
    fitted = z @ w
    return {"weights": [float(v) for v in w], "mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "clip": [float(fitted.min()), float(fitted.max())], "offset": float(residual.mean())}


def apply(cal: dict, pred: np.ndarray, shape: np.ndarray | None = None) -> np.ndarray:
    from narformer_tvm.model.calibrated import calibrated_latency

    return calibrated_latency(cal, pred, shape)


def accuracy(pred: np.ndarray, true: np.ndarray, seed: int = 0, rounds: int = 1000) -> dict:
    """MAPE and Acc(10%) with 90% bootstrap intervals over the models."""
    err = relative_errors(pred, true)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(err), (rounds, len(err)))
    mapes, accs = err[idx].mean(1), (err[idx] <= 0.10).mean(1)
    return {"n": int(len(err)), "mape": float(err.mean()), "acc10": float((err <= 0.10).mean()),
            "mape_90": [float(np.quantile(mapes, 0.05)), float(np.quantile(mapes, 0.95))],
            "acc10_90": [float(np.quantile(accs, 0.05)), float(np.quantile(accs, 0.95))],
            "bias": float(np.median(pred / true - 1))}


def finetune(checkpoint: Path, train: list, val: list, seed: int = 0,
             progress: Callable[[str], None] | None = None):
    """The base predictor (a torch checkpoint) trained on from ``train``: its level first (one factor,
    so that the first steps do not spend themselves on it), then every weight in log loss, keeping the
    epoch best on ``val``."""
    from narformer_tvm.learn.train import FitConfig, TrainOptions, recalibrate, train_predictor
    from narformer_tvm.model.predictor import Predictor

    pred = recalibrate(Predictor.load(checkpoint), train)
    fit = FitConfig(loss="log", seed=seed, **FINETUNE)
    return train_predictor(train, val, TrainOptions(fit=fit), init=pred, progress=progress)


def scratch(checkpoint: Path, train: list, val: list, seed: int = 0,
            progress: Callable[[str], None] | None = None):
    """A predictor of the base's shape (``checkpoint``) trained from nothing on ``train``, keeping the
    epoch best on ``val``: on a configuration far from the base's, its rows alone can do better."""
    from narformer_tvm.learn.train import FitConfig, TrainOptions, train_predictor
    from narformer_tvm.model.predictor import Predictor

    base = Predictor.load(checkpoint)
    model = {"d_model": base.config.d_model, "n_groups": base.config.n_groups, "readout": base.config.readout}
    fit = FitConfig(loss="log", seed=seed, **SCRATCH)
    features = {**base.features.to_dict(), "vocab": tuple(base.features.vocab)}
    return train_predictor(train, val, TrainOptions(model=model, features=features, fit=fit), progress=progress)


TRAINED = {"finetune": finetune, "scratch": scratch}  # adaptations that train weights (torch)
TRAINING_EPOCHS = {"finetune": FINETUNE["epochs"], "scratch": SCRATCH["epochs"]}


@dataclass
class Adaptation:
    """The candidate adaptations fitted to calibration rows, and the one to keep."""

    errors: dict[str, np.ndarray]  # method -> absolute relative error on each row, predicted out of fold
    maps: dict[str, dict]  # rescaling method -> its map, fitted on every row
    trained: dict = field(default_factory=dict)  # trained method -> Predictor: its fold models' ensemble
    seconds: dict[str, float] = field(default_factory=dict)  # "training": wall seconds of every trained method
    method: str = ""  # choose(errors)

    def predict(self, method: str, samples: list, pred: np.ndarray, shape: np.ndarray) -> np.ndarray:
        """Latency (ms) of ``samples`` (base predictions ``pred``, shapes ``shape``) under ``method``."""
        if method in self.trained:
            return _predict(self.trained[method], samples)
        return apply(self.maps[method], pred, shape)


def adapt(samples: list, pred: np.ndarray, shape: np.ndarray, methods: tuple[str, ...],
          checkpoint: Path | None = None, progress: Callable[[str, int, int, str], None] | None = None,
          folds: int = FOLDS, processes: int | None = None) -> Adaptation:
    """Fit each of ``methods`` (and, with a torch ``checkpoint``, each of TRAINED) to ``samples`` (base
    predictions ``pred``, shape descriptors ``shape``), judge each on predictions of rows it was not fitted
    to (``folds``-fold cross-validation) and choose. A map is then refitted on every row; a trained
    adaptation keeps the ensemble of its fold models, each stopped early on its own held fold; they train
    side by side in up to ``processes`` processes (default: one per core this process may use)."""
    true = np.array([s.latency_ms for s in samples])
    fold = folds_of([s.key for s in samples], folds)
    oof = {}
    for method in methods:
        oof[method] = np.zeros(len(samples))
        for f in range(folds):
            cal = fit_method(method, pred[fold != f], true[fold != f], shape[fold != f])
            oof[method][fold == f] = apply(cal, pred[fold == f], shape[fold == f])
    out = Adaptation({}, {m: fit_method(m, pred, true, shape) for m in methods})
    judged = np.ones(len(samples), dtype=bool)  # the rows every candidate predicted out of fold
    if checkpoint is not None:
        from narformer_tvm.learn.side_by_side import run_side_by_side
        from narformer_tvm.model.predictor import merge_predictors

        trained_folds = list(range(folds)) if len(samples) <= FOLD_ROWS else [0]
        judged = np.isin(fold, trained_folds)
        pick = lambda keep: [s for s, k in zip(samples, keep) if k]  # noqa: E731
        # the longest trainings first, so that the last to finish is a short one
        jobs = sorted(((m, f) for m in TRAINED for f in trained_folds), key=lambda j: -TRAINING_EPOCHS[j[0]])
        t0 = time.time()
        models = run_side_by_side([(TRAINED[m], (checkpoint, pick(fold != f), pick(fold == f)), {}) for m, f in jobs],
                                  processes=processes, progress=_fold_progress(progress, jobs, len(trained_folds)))
        for method in TRAINED:
            mine = [(f, model) for (m, f), model in zip(jobs, models) if m == method]
            oof[method] = np.full(len(samples), np.nan)
            for f, model in mine:
                oof[method][fold == f] = _predict(model, pick(fold == f))
            out.trained[method] = merge_predictors([model for _, model in mine])
        out.seconds["training"] = time.time() - t0
    out.errors = {m: relative_errors(p[judged], true[judged]) for m, p in oof.items()}
    out.method = choose(out.errors)
    return out


def candidate_methods(base_meta: dict, fp: dict, config: dict, variant: str = "fp32") -> tuple[str, ...]:
    """The rescalings to choose among: the unadapted base only on the base profile's own CPU and
    configuration. Elsewhere a level shift is expected, and a few validation rows cannot tell one factor's
    gain from chance."""
    from narformer_tvm.profiles import hardware_differences

    same_cpu = not hardware_differences(base_meta.get("fingerprint") or {}, here=fp)
    same = same_cpu and base_meta.get("config") == config and variant == "fp32"
    return METHODS if same else METHODS[1:]


def methods_of(folder: Path, base: str) -> tuple[str, ...]:
    """The rescalings a user profile (``folder``, calibrated from the shipped ``base``) chose among, read
    from both profiles' profile.json as ``calibrate`` wrote them."""
    from narformer_tvm.profiles import list_profiles

    here = json.loads((folder / "profile.json").read_text())
    return candidate_methods(json.loads((list_profiles()[base] / "profile.json").read_text()),
                             here.get("fingerprint") or {}, here.get("config") or {}, here.get("variant", "fp32"))


def base_view(predictor, samples: list) -> tuple[np.ndarray, np.ndarray]:
    """What the adaptations take of ``samples``: the base ``predictor``'s latencies (ms) and the shape
    descriptors, both of each sample's graph encoded as the predictor encodes it."""
    from narformer_tvm.graph.tokens import encode_table
    from narformer_tvm.model.calibrated import shape_descriptors

    encoded = [encode_table(s.table, predictor.features) for s in samples]
    return predictor.predict_encoded(encoded)[0], shape_descriptors(encoded)


def choose(errors: dict[str, np.ndarray]) -> str:
    """The adaptation to keep, from each one's absolute relative errors on the same rows, predicted out
    of fold (in order of complexity): the simplest whose mean is within one standard error of the best one's
    (the paired difference's), so that a few validation rows cannot hand the profile to a trained
    predictor that merely got lucky on them."""
    best = min(errors, key=lambda m: errors[m].mean())
    for method, err in errors.items():
        diff = err - errors[best]
        se = diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else math.inf
        if diff.mean() <= se:
            return method
    return best


def finetune_checkpoint(base: str) -> Path | None:
    """The base profile's torch checkpoint where fine-tuning can run here (torch installed, a source
    checkout rather than a wheel), else None."""
    from narformer_tvm.errors import PredictorNotFoundError
    from narformer_tvm.profiles import resolve_predictor

    if importlib.util.find_spec("torch") is None:
        return None
    try:
        path = resolve_predictor(base, checkpoint=True)
    except PredictorNotFoundError:
        return None
    return path if path.suffix == ".pt" else None


@dataclass
class CalibrationResult:
    name: str
    folder: Path
    measured: int  # models with a usable measurement in the calibration dataset
    profiled_s: float  # seconds this run spent profiling, the warm-up included
    left: int  # calibration models the budget did not reach (a rerun goes on with them)
    validation: dict = field(default_factory=dict)  # method -> validation MAPE
    calibration: dict = field(default_factory=dict)  # the chosen map
    test: dict = field(default_factory=dict)  # accuracy() on the held-out models
    test_base: dict = field(default_factory=dict)  # the unadapted base on the same models
    drift: list[str] = field(default_factory=list)  # the reference network's moves beyond profiler.DRIFT_LIMIT
    warm_up_s: float = 0.0  # of profiled_s, spent loading the machine before measuring


def profile_name(base: str, cfg, variant: str = "fp32") -> str:
    opt = "" if cfg.opt_level == "all" else f"-opt{cfg.opt_level}"
    return (f"{base}-calibrated-{cfg.runtime}-{cfg.target}-{cfg.resolved_threads()}t{opt}"
            + ("" if variant == "fp32" else f"-{variant}"))


def reference_levels(db: Path, samples: list) -> np.ndarray | None:
    """The reference network's latency when each sample's main row was measured, interpolated between the
    reference checks of the calibration dataset ``db``; None with fewer than two checks."""
    from datetime import datetime

    from narformer_tvm.data.store import Store

    epoch = lambda text: datetime.fromisoformat(text).timestamp()  # noqa: E731
    with Store(db, readonly=True) as store:
        refs = store.db.execute("SELECT measured_at, latency_ms FROM reference WHERE latency_ms > 0 ORDER BY id").fetchall()
        at = {r["key"]: r["measured_at"] for r in store.rows()}
    if len(refs) < 2:
        return None
    t, ms = np.array([epoch(r[0]) for r in refs]), np.array([r[1] for r in refs])
    return np.interp([epoch(at[s.key]) for s in samples], t, ms)


def probe_levels(db: Path, samples: list, window: int = PROBE_LEVEL_ROWS) -> np.ndarray | None:
    """The regime probes' level when each sample's main row was measured: the median of the quicker probe
    of the ``window`` rows around it in the order measured (the regime gate probes before and after every
    row); None where the rows of ``db`` carry no probes (a sweep without the gate)."""
    from narformer_tvm.data.store import Store

    with Store(db, readonly=True) as store:
        rows = sorted((r["measured_at"], r["model_id"], r["key"], min(r["info"]["probe_ms"]))
                      for r in store.rows() if r["info"].get("probe_ms"))
    if not rows:
        return None
    probes = np.array([r[3] for r in rows])
    half = window // 2
    level = {r[2]: float(np.median(probes[max(0, i - half):i + half + 1])) for i, r in enumerate(rows)}
    if any(s.key not in level for s in samples):
        return None
    return np.array([level[s.key] for s in samples])


def label_levels(db: Path, samples: list) -> np.ndarray | None:
    """The level each calibration label is brought from: the rows' regime probes where they carry them
    (2-thread ONNX Runtime), else the reference network's checks; None: the labels stay as measured."""
    level = probe_levels(db, samples)
    return level if level is not None else reference_levels(db, samples)


def level_corrected(samples: list, level: np.ndarray | None, to: float | None = None) -> list:
    """``samples`` with each label brought to the level ``to`` (default: the median of ``level``, the
    machine's level when each was measured, as label_levels reads it): rows measured while it drifted agree."""
    if level is None:
        return samples
    to = float(np.median(level)) if to is None else to
    return [replace(s, latency_ms=s.latency_ms * to / lv) for s, lv in zip(samples, level)]


def calibrate(cfg, base: str | None = None, budget_s: float = 600.0, name: str | None = None,
              progress: Callable[[str, int, int, str], None] | None = None, limit: int | None = None,
              gate_wait_s: float = 10.0, include_noisy: bool = False, allow_finetune: bool = True,
              variant: str = "fp32", folds: int = FOLDS, warm_up_s: float = 0.0) -> CalibrationResult:
    """Profile the calibration set under ``cfg`` for at most ``budget_s`` (resuming what an earlier run
    measured), adapt the ``base`` profile's predictor, write the user profile and return its accuracy.
    ``variant`` (ort_variants.VARIANTS): every model is measured as that version of itself (int8, fp16),
    and the profile predicts models of that kind. ``folds``: of the cross-validation choosing the
    adaptation. ``warm_up_s``: the machine is loaded that long first, outside the budget (the command's
    --warm-up). ``progress(kind, i, n, message)`` hears of the warm-up, each model ("start", "done") and
    fine-tuning epoch."""
    from narformer_tvm.data.store import Store
    from narformer_tvm.learn.samples import load_samples
    from narformer_tvm.model.load import load_predictor
    from narformer_tvm.measure.backends import fingerprint, get_backend
    from narformer_tvm.measure.profiler import Job, check_config, sweep
    from narformer_tvm.measure.regime_gate import gate_settings
    from narformer_tvm.profiles import default_profile, list_profiles, resolve_predictor, user_profiles_dir

    check_config(cfg)
    base = base or default_profile(include_user=False)
    base_path = resolve_predictor(base)
    base_folder = list_profiles().get(base)
    if base_folder is not None and base_folder.parent == user_profiles_dir():
        raise InputError(f"{base!r} is itself a calibrated profile", hint="calibrate from a shipped profile")
    name = name or profile_name(base, cfg, variant)
    folder = user_profiles_dir() / name
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [Job(key=v.key, name=v.name, family=v.family, variant=v.to_dict()) for v in calibration_variants(limit)]
    if variant != "fp32":
        jobs = [j.with_candidate(variant, None) for j in jobs]
    t0 = time.time()
    with Store(folder / "calibration.db") as store:
        summary = sweep(jobs, store, cfg, gate=gate_settings(cfg, wait_s=gate_wait_s), progress=progress,
                        deadline=t0 + warm_up_s + budget_s, reference_every=REFERENCE_EVERY, tries=2,
                        warm_up_s=warm_up_s)
    try:
        samples, _ = load_samples(folder / "calibration.db", include_noisy=include_noisy)
        samples = level_corrected(samples, label_levels(folder / "calibration.db", samples))
        every, _ = load_samples(folder / "calibration.db", include_noisy=True)
    except InputError:
        samples = every = []
    result = CalibrationResult(name, folder, len(samples), time.time() - t0, summary.left, drift=summary.drift,
                               warm_up_s=summary.warm_up_s)
    if len(samples) < MIN_MODELS:
        busy = len(every) - len(samples)
        raise InputError(f"only {len(samples)} usable calibration models measured (at least {MIN_MODELS} needed)"
                         + (f"; {busy} more were flagged noisy (other work on the machine)" if busy else ""),
                         hint="rerun with a larger --budget, on a quiet machine: it goes on from what was measured")
    pred, shape = base_view(load_predictor(base_path), samples)
    true = np.array([s.latency_ms for s in samples])
    test_rows = held_out([s.key for s in samples])
    fp = fingerprint(cfg, get_backend(cfg.runtime))
    base_meta = json.loads((base_folder / "profile.json").read_text()) if base_folder is not None else {}
    checkpoint = finetune_checkpoint(base) if allow_finetune else None
    fit_rows = ~test_rows
    fitted = adapt([s for s, keep in zip(samples, fit_rows) if keep], pred[fit_rows], shape[fit_rows],
                   candidate_methods(base_meta, fp, cfg.identity(), variant), checkpoint, progress, folds)
    result.validation = {m: float(e.mean()) for m, e in fitted.errors.items()}
    result.calibration = fitted.maps.get(fitted.method) or {"method": fitted.method, "log_scale": 0.0, "exponent": 1.0}
    held = [s for s, keep in zip(samples, test_rows) if keep]
    adapted = fitted.predict(fitted.method, held, pred[test_rows], shape[test_rows])
    result.test = accuracy(adapted, true[test_rows])
    result.test_base = accuracy(pred[test_rows], true[test_rows])
    _write_profile(result, folder, base, base_path, cfg, fp, fitted.trained.get(fitted.method), variant)
    return result


def _predict(predictor, samples: list) -> np.ndarray:
    from narformer_tvm.graph.tokens import encode_table

    return predictor.predict_encoded([encode_table(s.table, predictor.features) for s in samples])[0]


def _fold_progress(progress, jobs: list[tuple[str, int]], folds: int):
    """train_predictor's progress lines of the (method, fold) ``jobs`` as ``progress(method, epochs done,
    epochs, line)`` summed over the method's folds (a fold stopped early counts its full epochs)."""
    if progress is None:
        return None
    done = {job: 0 for job in jobs}

    def report(i: int, line: str | None) -> None:
        method, fold = jobs[i]
        m = re.search(r"epoch (\d+)/", line or "")
        done[jobs[i]] = int(m[1]) if m else TRAINING_EPOCHS[method] if line is None else done[jobs[i]]
        ran = sum(e for (m_, _), e in done.items() if m_ == method)
        progress(method, ran, folds * TRAINING_EPOCHS[method], f"fold {fold + 1}/{folds}: {line or 'done'}")
    return report


def _write_profile(result: CalibrationResult, folder: Path, base: str, base_path: Path, cfg, fp: dict,
                   tuned=None, variant: str = "fp32") -> None:
    if tuned is not None:  # the trained weights, exported so that estimate runs them without torch
        from narformer_tvm.model.export import export_onnx

        dst = export_onnx(tuned, folder / "predictor.onnx")
        (folder / "predictor.pt").unlink(missing_ok=True)
    else:
        dst = folder / ("predictor" + base_path.suffix)
        if not dst.exists() or dst.stat().st_size != base_path.stat().st_size or _was_finetuned(folder):
            shutil.copyfile(base_path, dst)
    key = "onnx" if dst.suffix == ".onnx" else "predictor"
    meta = {"name": result.name, "kind": "user", "base_profile": base, key: dst.name,
            "runtime": cfg.runtime, "target": cfg.target, "threads": cfg.resolved_threads(),
            "config": cfg.identity(), "variant": variant, "fingerprint": fp, "calibration": result.calibration,
            "calibration_models": result.measured, "validation_mape": result.validation,
            "metrics": {**result.test, "split": "held-out calibration models"},
            "base_metrics": result.test_base, "drift": result.drift,
            "calibrated_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (folder / "profile.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")


def _was_finetuned(folder: Path) -> bool:
    meta = folder / "profile.json"
    return meta.exists() and json.loads(meta.read_text()).get("calibration", {}).get("method") in TRAINED


def describe(result: CalibrationResult) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
