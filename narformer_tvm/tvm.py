"""NAR-Former V2 as a TVM MetaSchedule cost model, and the helpers tuning needs on this machine.

    from narformer_tvm.tvm import NARFormerCostModel, fast_builder, meta_schedule
    ms = meta_schedule()
    ms.tune_tir(mod, target, work_dir, 64, cost_model=NARFormerCostModel(), builder=fast_builder())

Each measure candidate (a scheduled TIR function) becomes a graph: one node per buffer store,
with MetaSchedule's per-store features (loop structure, memory access, arithmetic; 164 numbers)
plus a code of its position as tokens, and edges from each store to the next (program order, the
data dependence of TIR blocks). Scores are normalised throughput per task (best latency / latency),
failed runs score 0, as MetaSchedule's XGBoost model does.
"""
from __future__ import annotations

import importlib
import math
import os
import tempfile
from pathlib import Path

import numpy as np

MS_MODULES = ("tvm.s_tir.meta_schedule", "tvm.meta_schedule")  # TVM >= 0.24, then older releases
N_STORE_FEATURES = 164
N_POS_FREQS = 4


def _import_first(names):
    errors = []
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError as e:
            errors.append(f"{name}: {e}")
    raise ImportError("MetaSchedule not found (" + "; ".join(errors) + "); pip install 'narformer-tvm[tvm]'")


def meta_schedule():
    """The MetaSchedule package of the installed TVM, whichever path it lives at (the one shim)."""
    return _import_first(MS_MODULES)


def fast_build(mod, target, params):
    """MetaSchedule's default build without ``import tvm.s_tir.tensor_intrin`` (25 s in every fresh
    worker here, past the builder's 30 s timeout). Enough for CPU targets without tensor intrinsics."""
    from tvm.driver import build as tvm_build

    try:
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    except ImportError:  # TVM < 0.24
        from tvm.tir.transform import RemoveWeightLayoutRewriteBlock
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def fast_builder(max_workers: int | None = None, timeout_sec: float = 60.0):
    return meta_schedule().builder.LocalBuilder(f_build=fast_build, max_workers=max_workers, timeout_sec=timeout_sec)


def _candidate_graph(feat: np.ndarray):
    from .features import EncodedGraph, sinusoid

    n = feat.shape[0]
    pos = sinusoid(np.arange(n, dtype=np.float64)[:, None], N_POS_FREQS, 100.0)
    x = np.concatenate([feat.astype(np.float32), pos.astype(np.float32)], axis=1)
    edges = np.array([(i, i + 1) for i in range(n - 1)], dtype=np.int64).reshape(-1, 2)
    return EncodedGraph(x=x, edges=edges, static=np.ones(1, dtype=np.float32))


def _make_cost_model_class():
    ms = meta_schedule()
    from tvm.ir.utils import derived_object

    @derived_object
    class NARFormerCostModel(ms.cost_model.PyCostModel):
        """Graph-aided attention over the buffer stores of each candidate schedule.

        ``pretrained``: a file written by ``save`` (e.g. after offline training on tuning records);
        ``frozen``: never retrain (use a pre-trained model as is); ``update_steps``: gradient steps
        per ``update`` call, which keeps retraining incremental and cheap.
        """

        def __init__(self, *, d_model: int = 64, n_layers: int = 2, n_groups: int = 4, pretrained: str | None = None,
                     frozen: bool = False, num_warmup_samples: int = 16, update_steps: int = 40, batch_size: int = 64,
                     lr: float = 2e-3, seed: int = 0):
            import torch

            from .model import ModelConfig, NARFormer

            super().__init__()
            self.extractor = ms.feature_extractor.PerStoreFeature()
            self.config = ModelConfig(n_features=N_STORE_FEATURES + 2 * N_POS_FREQS, n_static=1, d_model=d_model,
                                      n_layers=n_layers, n_groups=n_groups, dropout=0.0)
            torch.manual_seed(seed)
            self.model = NARFormer(self.config)
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=1e-4)
            self.rng = np.random.default_rng(seed)
            self.frozen, self.num_warmup_samples = frozen, num_warmup_samples
            self.update_steps, self.batch_size = update_steps, batch_size
            self.data: dict[str, dict] = {}  # task hash -> {"features": [...], "costs": [...]}
            self.trained = False
            self.seconds = {"predict": 0.0, "update": 0.0}
            if pretrained:
                self.load(pretrained)

        # -- data --
        @property
        def data_size(self) -> int:
            return sum(len(g["costs"]) for g in self.data.values())

        def _features(self, context, candidates) -> list[np.ndarray]:
            return [x.numpy().astype(np.float32) for x in self.extractor.extract_from(context, candidates)]

        def add(self, task: str, features: list[np.ndarray], costs: list[float]) -> None:
            g = self.data.setdefault(task, {"features": [], "costs": []})
            for f, c in zip(features, costs):
                if len(f):
                    g["features"].append(f)
                    g["costs"].append(c)

        def _training_set(self):
            xs, ys = [], []
            for g in self.data.values():
                costs = np.array(g["costs"], dtype=np.float64)
                ok = np.isfinite(costs) & (costs > 0)
                best = costs[ok].min() if ok.any() else 1.0
                ys.extend(np.where(ok, best / np.where(ok, costs, 1.0), 0.0))  # failed runs score 0
                xs.extend(g["features"])
            return xs, np.array(ys, dtype=np.float32)

        def train_steps(self, steps: int) -> float:
            """``steps`` minibatch steps on everything seen so far; returns the last loss."""
            import torch

            from .dataset import collate

            xs, ys = self._training_set()
            if not xs:
                return float("nan")
            graphs = [_candidate_graph(f) for f in xs]
            self.model.train()
            loss_value = float("nan")
            for _ in range(steps):
                idx = self.rng.choice(len(graphs), size=min(self.batch_size, len(graphs)), replace=False)
                batch = collate([graphs[i] for i in idx], ys[idx])
                pred = self.model(*batch.inputs())
                loss = ((pred - batch.y) ** 2).mean()
                dp, dy = pred[:, None] - pred[None, :], batch.y[:, None] - batch.y[None, :]
                pairs = dy > 0.01
                if pairs.any():
                    loss = loss + torch.nn.functional.softplus(-10.0 * dp[pairs]).mean() * 0.1
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                loss_value = float(loss.item())
            self.model.eval()
            self.trained = True
            return loss_value

        def predict_features(self, features: list[np.ndarray]) -> np.ndarray:
            import torch

            from .dataset import collate, size_buckets

            out = np.zeros(len(features))
            valid = [i for i, f in enumerate(features) if len(f)]
            graphs = [_candidate_graph(features[i]) for i in valid]
            with torch.no_grad():
                for idx in size_buckets([g.n for g in graphs], 256):
                    out[np.array(valid)[idx]] = self.model(*collate([graphs[i] for i in idx]).inputs()).numpy()
            return out

        def pretrain(self, work_dirs: list[str], steps: int = 500) -> int:
            """Learn offline from MetaSchedule JSON databases of earlier tuning runs; returns the
            number of records read. Tuning then fine-tunes online (unless frozen)."""
            n = 0
            for d in work_dirs:
                for task, feats, costs in read_tuning_records(d):
                    self.add(task, feats, costs)
                    n += len(costs)
            if n:
                self.train_steps(steps)
            return n

        # -- MetaSchedule's contract --
        def predict(self, context, candidates) -> np.ndarray:
            import time

            t0 = time.perf_counter()
            if not self.trained and self.data_size < self.num_warmup_samples:
                scores = self.rng.uniform(0, 1, len(candidates))  # cold start with no data and no pre-training
            else:
                scores = self.predict_features(self._features(context, candidates))
            self.seconds["predict"] += time.perf_counter() - t0
            return scores.astype("float64")

        def update(self, context, candidates, results) -> None:
            import time

            t0 = time.perf_counter()
            costs = [float(np.median([float(s) for s in r.run_secs])) if r.run_secs and r.error_msg is None
                     else math.inf for r in results]
            self.add(ms.utils.shash2hex(context.mod), self._features(context, candidates), costs)
            if not self.frozen and self.data_size >= self.num_warmup_samples:
                self.train_steps(self.update_steps)
            self.seconds["update"] += time.perf_counter() - t0

        def save(self, path: str) -> None:
            import torch

            from .dataset import write_atomically

            Path(path).parent.mkdir(parents=True, exist_ok=True)
            state = {"format": "narformer-tvm-cost-model", "version": 1, "config": self.config.to_dict(),
                     "state_dict": self.model.state_dict(), "trained": self.trained,
                     "data": {k: {"features": g["features"], "costs": g["costs"]} for k, g in self.data.items()}}
            write_atomically(path, lambda tmp: torch.save(state, tmp))

        def load(self, path: str) -> None:
            import torch

            from .errors import CheckpointError
            from .model import ModelConfig, NARFormer

            try:
                state = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as e:
                raise CheckpointError(f"{path}: not a readable cost model ({type(e).__name__})") from None
            if not isinstance(state, dict) or state.get("format") != "narformer-tvm-cost-model":
                raise CheckpointError(f"{path}: not a narformer-tvm cost model")
            self.config = ModelConfig(**state["config"])
            self.model = NARFormer(self.config)
            self.model.load_state_dict(state["state_dict"])
            self.model.eval()
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.opt.param_groups[0]["lr"], weight_decay=1e-4)
            self.data = state["data"]
            self.trained = state["trained"]

    return NARFormerCostModel


def read_tuning_records(work_dir: str):
    """(task hash, per-store features, costs in s) for each workload of a MetaSchedule JSON database
    (``database_workload.json`` + ``database_tuning_record.json`` in ``work_dir``)."""
    import tvm

    ms = meta_schedule()
    from .errors import InputError

    wl, tr = Path(work_dir) / "database_workload.json", Path(work_dir) / "database_tuning_record.json"
    if not wl.is_file() or not tr.is_file():
        raise InputError(f"{work_dir}: no MetaSchedule database (database_workload.json, database_tuning_record.json)",
                         hint="point at the --work-dir of `narformer-tvm tune` or of a tune_tir/tune_relax run")
    db = ms.database.JSONDatabase(str(wl), str(tr), allow_missing=False)
    extractor = ms.feature_extractor.PerStoreFeature()
    by_task: dict[str, tuple[list, list]] = {}
    for rec in db.get_all_tuning_records():
        mod = rec.workload.mod
        sch = tvm.s_tir.Schedule(mod)
        try:
            rec.trace.apply_to_schedule(sch, remove_postproc=False)
        except Exception:  # a record whose trace no longer applies: skip it
            continue
        ctx = ms.TuneContext(mod=mod, target=rec.target)
        cand = ms.MeasureCandidate(sch, rec.args_info)
        feat = extractor.extract_from(ctx, [cand])[0].numpy().astype(np.float32)
        cost = float(np.median([float(s) for s in rec.run_secs])) if rec.run_secs else math.inf
        key = ms.utils.shash2hex(mod)
        by_task.setdefault(key, ([], []))
        by_task[key][0].append(feat)
        by_task[key][1].append(cost)
    return [(k, f, c) for k, (f, c) in by_task.items()]


# ----- predict-only tuning: the cost model stands in for build + run ------------------------------

PREDICTED_SUFFIX = ".predicted"
PREDICTED_UNIT_S = 1e-6  # pseudo run time of a score-1.0 candidate; only the order within a task matters


def predict_only(cost_model):
    """(builder, runner) that score each candidate with ``cost_model`` instead of compiling and running
    it: tuning explores with predictions only. The cost model must be trained (pre-trained, e.g. with
    ``tunedb pretrain``) and is frozen, since learning from its own predictions would be circular.
    Measure the best predicted schedules afterwards with ``measure_top``."""
    import tvm
    from tvm.ir.utils import derived_object

    ms = meta_schedule()
    if not getattr(cost_model, "trained", False):
        from .errors import InputError

        raise InputError("predict-only tuning needs a trained cost model",
                         hint="pre-train one with `narformer-tvm tunedb pretrain WORK_DIR --out cm.pt` and pass it")
    cost_model.frozen = True

    @derived_object
    class PredictBuilder(ms.builder.PyBuilder):
        def build(self, build_inputs):
            out = []
            for inp in build_inputs:
                try:
                    ctx = ms.TuneContext(mod=inp.mod, target=inp.target)
                    cand = ms.MeasureCandidate(tvm.s_tir.Schedule(inp.mod),
                                               ms.arg_info.ArgInfo.from_entry_func(inp.mod, remove_preproc=True))
                    score = float(cost_model.predict(ctx, [cand])[0])
                    # A real (empty) artifact folder: MetaSchedule's clean-up callback removes it.
                    path = os.path.join(tempfile.mkdtemp(prefix="narformer-predicted-"), f"{score!r}{PREDICTED_SUFFIX}")
                    out.append(ms.builder.BuilderResult(path, None))
                except Exception as e:  # an unscorable candidate is a failed build, as in real tuning
                    out.append(ms.builder.BuilderResult(None, f"{type(e).__name__}: {e}"))
            return out

    @derived_object
    class PredictedResult(ms.runner.PyRunnerFuture):
        def __init__(self, result):
            super().__init__()
            self.res = result

        def done(self):
            return True

        def result(self):
            return self.res

    @derived_object
    class PredictRunner(ms.runner.PyRunner):
        def run(self, runner_inputs):
            futures = []
            for inp in runner_inputs:
                score = float(os.path.basename(str(inp.artifact_path))[:-len(PREDICTED_SUFFIX)])
                secs = PREDICTED_UNIT_S / score if score > 1e-9 and math.isfinite(score) else None
                futures.append(PredictedResult(ms.runner.RunnerResult([secs] if secs else None,
                                                                      None if secs else "predicted to fail")))
            return futures

    return PredictBuilder(), PredictRunner()


def measure_top(predicted, database, target, top_n: int = 4, builder=None, runner=None) -> int:
    """Build and run the ``top_n`` best predicted schedules of every workload in the ``predicted``
    database; commit the real measurements to ``database``. Returns how many were measured."""
    import tvm

    ms = meta_schedule()
    builder = builder or fast_builder()
    runner = runner or ms.runner.LocalRunner()
    n = 0
    for rec0 in _workload_heads(predicted):
        workload = database.commit_workload(rec0.workload.mod)
        records = predicted.get_top_k(rec0.workload, top_n)
        schedules = []
        for rec in records:
            sch = tvm.s_tir.Schedule(rec.workload.mod)
            rec.trace.apply_to_schedule(sch, remove_postproc=False)
            schedules.append((rec, sch))
        built = builder.build([ms.builder.BuilderInput(sch.mod, target) for _, sch in schedules])
        run_inputs, keep = [], []
        for (rec, sch), b in zip(schedules, built):
            if b.error_msg is None:
                run_inputs.append(ms.runner.RunnerInput(b.artifact_path, "cuda" if target.kind.name == "cuda" else "cpu",
                                                        ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)))
                keep.append(rec)
        for rec, fut in zip(keep, runner.run(run_inputs)):
            res = fut.result()
            database.commit_tuning_record(ms.database.TuningRecord(
                rec.trace, workload, [float(s) for s in res.run_secs] if res.error_msg is None else None, target,
                rec.args_info))
            n += 1
    return n


def _workload_heads(db):
    """One tuning record per workload of a database (its best)."""
    seen, heads = set(), []
    for rec in db.get_all_tuning_records():
        key = meta_schedule().utils.shash2hex(rec.workload.mod)
        if key not in seen:
            seen.add(key)
            heads.append(rec)
    return heads


_CLASS = None


def __getattr__(name):  # lazy: importing narformer_tvm.tvm must not import TVM
    global _CLASS
    if name == "NARFormerCostModel":
        if _CLASS is None:
            _CLASS = _make_cost_model_class()
        return _CLASS
    raise AttributeError(name)


BUILTIN_COST_MODELS = ("xgb", "mlp", "random")


def list_cost_models() -> list[str]:
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group="narformer_tvm.cost_models")} | set(BUILTIN_COST_MODELS))


def get_cost_model(name: str, **kwargs):
    """A cost model by name: registered ones ('narformer', entry-point group narformer_tvm.cost_models)
    or MetaSchedule's built-ins ('xgb', 'mlp', 'random'), like ``CostModel.create``."""
    from importlib.metadata import entry_points

    from .errors import InputError

    eps = {ep.name: ep for ep in entry_points(group="narformer_tvm.cost_models")}
    if name in eps:
        return eps[name].load()(**kwargs)
    if name in BUILTIN_COST_MODELS:
        return meta_schedule().CostModel.create(name, **kwargs)
    raise InputError(f"unknown cost model {name!r}", hint=f"choose from: {', '.join(list_cost_models())}")
