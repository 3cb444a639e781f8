"""NAR-Former V2 as a TVM MetaSchedule cost model, and the helpers tuning needs on this machine.

    from narformer_tvm.integrations.tvm_cost_model import NARFormerCostModel
    from narformer_tvm.integrations.tvm_env import fast_builder, meta_schedule
    ms = meta_schedule()
    ms.tune_tir(mod, target, work_dir, 64, cost_model=NARFormerCostModel(), builder=fast_builder())

Each measure candidate (a scheduled TIR function) becomes a graph: one node per buffer store,
with MetaSchedule's per-store features (loop structure, memory access, arithmetic; 164 numbers)
plus a code of its position as tokens, and edges from each store to the next (program order, the
data dependence of TIR blocks). Targets are normalised throughput per task (best latency / latency), failed runs 0, as
MetaSchedule's XGBoost model does; training ranks the candidates of each task (a pairwise loss within
tasks, minibatches of a few whole tasks) and regresses the target lightly, so scores stay in [0, 1].
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tvm.ir.utils import derived_object

from narformer_tvm.integrations.tvm_env import meta_schedule
from narformer_tvm.integrations.tvm_records import median_seconds, read_tuning_records

ms = meta_schedule()  # this module is imported only where TVM is used (the registry, entry points)

N_STORE_FEATURES = 164  # MetaSchedule's PerStoreFeature vector per buffer store


N_POS_FREQS = 4


def _chain_batch(features: list[np.ndarray], targets: np.ndarray | None = None):
    """The model's batch of candidates, each a chain of its stores (node i: store i's features and a
    code of i; edges i -> i+1), built as arrays at once (what ``collate`` gives for those graphs):
    predict scores thousands of candidates per search round."""
    import torch

    from narformer_tvm.graph.tokens import sinusoid
    from narformer_tvm.model.batching import INPUT_NAMES, Batch

    b, n = len(features), max(len(f) for f in features)
    lengths = np.array([len(f) for f in features])
    pos = sinusoid(np.arange(n, dtype=np.float64)[:, None], N_POS_FREQS, 100.0).astype(np.float32)  # (n, P)
    mask = np.arange(n)[None, :] < lengths[:, None]  # (B, n)
    x = np.zeros((b, n, N_STORE_FEATURES + pos.shape[1]), dtype=np.float32)
    for i, f in enumerate(features):
        x[i, :len(f), :N_STORE_FEATURES] = f
    x[:, :, N_STORE_FEATURES:] = pos * mask[..., None]
    nxt = mask[:, 1:]  # (B, n-1): store i has an edge to store i+1
    adj = np.zeros((b, n, n), dtype=np.float32)
    idx = np.arange(n)
    adj[:, idx, idx] = mask
    adj[:, idx[:-1], idx[1:]] = nxt
    adj[:, idx[1:], idx[:-1]] = nxt
    degree = np.zeros((b, n, 2), dtype=np.float32)  # (in, out) as pad_graphs counts them
    degree[:, 1:, 0] = nxt
    degree[:, :-1, 1] = nxt
    arrays = {"x": x, "adj": adj, "degree": degree, "mask": mask, "static": np.ones((b, 1), dtype=np.float32),
              "cost": np.zeros((b, n, 2), dtype=np.float32), "kind": np.zeros((b, n), dtype=np.int64)}
    y = torch.tensor(np.asarray(targets, dtype=np.float32)) if targets is not None else None
    return Batch(*(torch.from_numpy(arrays[k]) for k in INPUT_NAMES), y)


def _throughput(costs) -> np.ndarray:
    """A task's run times as normalised throughput: its best time / each time; failed runs score 0."""
    c = np.array(costs, dtype=np.float64)
    ok = np.isfinite(c) & (c > 0)
    best = c[ok].min() if ok.any() else 1.0
    return np.where(ok, best / np.where(ok, c, 1.0), 0.0)


@derived_object
class NARFormerCostModel(ms.cost_model.PyCostModel):
    """Graph-aided attention over the buffer stores of each candidate schedule.

    ``pretrained``: a file written by ``save`` (e.g. after offline training on tuning records);
    ``frozen``: never retrain (use a pre-trained model as is); ``update_steps``: gradient steps
    per ``update`` call, which keeps retraining incremental and cheap; ``feature_cache_size``: the
    most candidates whose features are kept for reuse (least recently scored dropped first).
    """

    def __init__(self, *, d_model: int = 64, n_layers: int = 2, n_groups: int = 4, pretrained: str | None = None,
                 frozen: bool = False, num_warmup_samples: int = 16, update_steps: int = 40, batch_size: int = 64,
                 lr: float = 2e-3, seed: int = 0, feature_cache_size: int = 20000):
        import collections

        import torch

        from narformer_tvm.model.narformer import ModelConfig, NARFormer

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
        self.focus: str | None = None  # the task being tuned: in every online minibatch
        self.tasks_per_batch, self.regression_weight = 4, 0.5
        self.trained = False
        self.seconds = {"predict": 0.0, "update": 0.0}
        self.feature_cache: collections.OrderedDict = collections.OrderedDict()  # structural hash -> features
        self.feature_cache_size = feature_cache_size
        if pretrained:
            self.load(pretrained)

    # -- data --
    @property
    def data_size(self) -> int:
        return sum(len(g["costs"]) for g in self.data.values())

    def _features(self, context, candidates) -> list[np.ndarray]:
        """Per-store features, extracted once per distinct schedule: extraction is nearly all of
        predict's time, later generations of the evolutionary search score many schedules again, and
        ``update`` sees the measured ones a second time."""
        from tvm_ffi import structural_hash

        keys = [structural_hash(c.sch.mod) for c in candidates]
        todo: dict[int, int] = {}  # key -> index of its first candidate, for the keys not kept
        for i, key in enumerate(keys):
            if key in self.feature_cache:
                self.feature_cache.move_to_end(key)
            else:
                todo.setdefault(key, i)
        if todo:
            new = self.extractor.extract_from(context, [candidates[i] for i in todo.values()])
            for key, x in zip(todo, new):
                self.feature_cache[key] = x.numpy().astype(np.float32)
        out = [self.feature_cache[key] for key in keys]
        while len(self.feature_cache) > self.feature_cache_size:
            self.feature_cache.popitem(last=False)
        return out

    def add(self, task: str, features: list[np.ndarray], costs: list[float]) -> None:
        g = self.data.setdefault(task, {"features": [], "costs": []})
        for f, c in zip(features, costs):
            if len(f):
                g["features"].append(f)
                g["costs"].append(c)

    def _training_set(self):
        """Features, targets and task sizes, task after task (the row order task_batches assumes)."""
        xs, ys, sizes = [], [], []
        for g in self.data.values():
            ys.extend(_throughput(g["costs"]))
            xs.extend(g["features"])
            sizes.append(len(g["costs"]))
        return xs, np.array(ys, dtype=np.float32), sizes

    def train_steps(self, steps: int) -> float:
        """``steps`` minibatch steps on everything seen so far; returns the last loss."""
        import torch

        from narformer_tvm.learn.ranking import pairwise_rank_loss, task_batches

        xs, ys, sizes = self._training_set()
        if not ys.size:
            return float("nan")
        groups = torch.as_tensor(np.repeat(np.arange(len(sizes)), sizes))
        focus = [list(self.data).index(self.focus)] if self.focus in self.data else None
        self.model.train()
        loss_value = float("nan")
        for _ in range(steps):
            idx = task_batches(sizes, self.batch_size, self.tasks_per_batch, self.rng, focus)
            batch = _chain_batch([xs[i] for i in idx], ys[idx])
            pred = self.model(*batch.inputs())
            loss = pairwise_rank_loss(pred, batch.y, groups[idx]) + \
                self.regression_weight * ((pred - batch.y) ** 2).mean()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            loss_value = float(loss.item())
        self.model.eval()
        self.trained = True
        return loss_value

    def predict_features(self, features: list[np.ndarray]) -> np.ndarray:
        import torch

        from narformer_tvm.model.batching import size_buckets

        out = np.zeros(len(features))
        valid = np.array([i for i, f in enumerate(features) if len(f)], dtype=np.int64)
        with torch.no_grad():
            for idx in size_buckets([len(features[i]) for i in valid], 1024):
                out[valid[idx]] = self.model(*_chain_batch([features[i] for i in valid[idx]]).inputs()).numpy()
        return out

    def pretrain(self, work_dirs: list[str], steps: int = 500, validation_share: float = 0.0,
                 eval_every: int = 0, patience: int = 4, progress=None) -> dict:
        """Learn offline from MetaSchedule JSON databases (``tunedb collect`` corpora, earlier tuning
        runs); tuning then fine-tunes online (unless frozen). ``validation_share`` of the tasks is kept
        out and scored: within-task Kendall tau of the scores against measured throughput. With
        ``eval_every``, training stops once ``patience`` scorings in a row have not beaten the best, and
        the weights of the best scoring are kept (``steps`` is then the most it trains)."""
        tasks = [t for d in work_dirs for t in read_tuning_records(d)]
        return self.fit_tasks(tasks, steps, validation_share, eval_every, patience, progress)

    def fit_tasks(self, tasks: list, steps: int = 500, validation_share: float = 0.0, eval_every: int = 0,
                  patience: int = 4, progress=None) -> dict:
        """``pretrain`` on (task hash, per-store features, costs) triples."""
        import copy

        kept_out = set(self.rng.choice(len(tasks), size=int(round(validation_share * len(tasks))), replace=False)) \
            if len(tasks) > 1 else set()
        held = [tasks[i] for i in sorted(kept_out)]
        for i, (task, feats, costs) in enumerate(tasks):
            if i not in kept_out:
                self.add(task, feats, costs)
        out = {"records": sum(len(c) for _, _, c in tasks), "tasks": len(tasks), "validation_tasks": len(held),
               "validation_tau": float("nan"), "steps": 0, "curve": [], "held_out": [t[0] for t in held]}
        if not self.data_size:
            return out
        if not (held and eval_every):
            self.train_steps(steps)
            out["steps"] = steps
            if held:
                out["validation_tau"] = self._held_out_tau(held)
            return out
        best, since_best = (-math.inf, None, 0), 0
        while out["steps"] < steps and since_best < patience:
            self.train_steps(min(eval_every, steps - out["steps"]))
            out["steps"] = min(out["steps"] + eval_every, steps)
            tau = self._held_out_tau(held)
            out["curve"].append((out["steps"], tau))
            if progress:
                progress(f"step {out['steps']}/{steps}: within-task Kendall tau {tau:.3f} on the held-out tasks")
            if tau > best[0] or best[1] is None:  # (a task set without spread scores nan)
                best, since_best = (tau, copy.deepcopy(self.model.state_dict()), out["steps"]), 0
            else:
                since_best += 1
        self.model.load_state_dict(best[1])
        out["validation_tau"], out["steps"] = best[0], best[2]
        return out

    def _held_out_tau(self, tasks: list) -> float:
        """Within-task Kendall tau of the scores against measured throughput (failed runs 0)."""
        from narformer_tvm.learn.ranking import within_task_kendall

        scores, target, groups = [], [], []
        for i, (_, feats, costs) in enumerate(tasks):
            target.extend(_throughput(costs))
            scores.extend(self.predict_features(feats))
            groups.extend([i] * len(costs))
        return within_task_kendall(np.array(scores), np.array(target), np.array(groups))

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
        costs = [median_seconds(r.run_secs, r.error_msg) for r in results]
        self.focus = ms.utils.shash2hex(context.mod)
        self.add(self.focus, self._features(context, candidates), costs)
        if not self.frozen and self.data_size >= self.num_warmup_samples:
            self.train_steps(self.update_steps)
        self.seconds["update"] += time.perf_counter() - t0

    def save(self, path: str) -> None:
        self._write(path, records=True)

    def save_weights(self, path: str) -> None:
        """The weights without the records (a shipped model: its corpus stays in the corpus, and
        fine-tuning while tuning then learns from the task at hand)."""
        self._write(path, records=False)

    def _write(self, path: str, records: bool) -> None:
        import torch

        from narformer_tvm.fileio import write_atomically

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        state = {"format": "narformer-tvm-cost-model", "version": 1, "config": self.config.to_dict(),
                 "state_dict": self.model.state_dict(), "trained": self.trained,
                 "data": {k: {"features": g["features"], "costs": g["costs"]} for k, g in self.data.items()}
                 if records else {}}
        write_atomically(path, lambda tmp: torch.save(state, tmp))

    def load(self, path: str) -> None:
        import torch

        from narformer_tvm.errors import CheckpointError
        from narformer_tvm.model.narformer import ModelConfig, NARFormer

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
        self.data = {}
        for task, g in state["data"].items():
            self.add(task, g["features"], g["costs"])
        self.trained = state["trained"]
