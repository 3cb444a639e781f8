"""Configuration ratios: how much slower or faster a model runs under a candidate than under ONNX Runtime's defaults.

latency(model, candidate) = latency(model, defaults) x ratio(candidate | model). The profile's latency
predictor (the accurate one) gives the first factor; a ridge regression of log ratios on the
candidate's configuration crossed with a few descriptors of the model's graph gives the second. A
ratio is taken between two measurements of the same model in the same sitting, so the machine's level
cancels out of the training data, and ranking the candidates of one model needs only the ratios.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from narformer_tvm.graph.tokens import LOG_SCALE, SCALARS, GraphTable
from narformer_tvm.integrations.ort_tuning import Candidate, config_vector, is_default
from narformer_tvm.measure.ort_session import OPT_LEVELS
from narformer_tvm.measure.ort_variants import VARIANTS

FORMAT = "narformer-ort-ratios/2"
GRAPH_FEATURES = ("bias", "log_macs", "log_nodes", "intensity", "conv_share", "grouped_conv_share", "matmul_share")
_FLOPS, _GROUP = SCALARS.index("log_flops"), SCALARS.index("group")


def graph_descriptors(t: GraphTable) -> np.ndarray:
    """(len(GRAPH_FEATURES),): size, arithmetic intensity and where the FLOPs are, of the original model."""
    flops = np.exp2(t.scalars[:, _FLOPS] / LOG_SCALE) - 1 if len(t.ops) else np.zeros(0)
    total = max(float(flops.sum()), 1.0)
    ops = np.array(t.ops)
    share = lambda mask: float(flops[mask].sum()) / total  # noqa: E731
    conv = ops == "Conv"
    grouped = conv & (t.scalars[:, _GROUP] > 1) if len(t.ops) else conv
    matmul = np.isin(ops, ("MatMul", "Gemm", "Einsum"))
    log_macs, log_flops, log_memory, log_nodes = t.static[1], t.static[2], t.static[4], t.static[5]
    return np.array([1.0, log_macs, log_nodes, log_flops - log_memory, share(conv & ~grouped), share(grouped),
                     share(matmul)], dtype=np.float64)


def config_features(c: Candidate, cores: int) -> np.ndarray:
    """The candidate's configuration vector plus the interactions that matter on CPUs: each variant
    with the thread count, the optimisation level and the execution mode. Variants, not their kinds:
    the ratio model sees the original graph only, so MatMul-only int8 must be its own column."""
    base = config_vector(c, cores).astype(np.float64)
    kind = np.array([float(c.variant == v) for v in VARIANTS])
    threads = math.log2((c.threads or cores))
    opt = np.array([float(c.opt_level == o) for o in OPT_LEVELS])
    parallel = float(c.execution_mode == "parallel")
    inter = math.log2((c.inter_threads or c.threads or cores) if parallel else 1)
    return np.concatenate([base, kind * threads, np.outer(kind, opt).ravel(), kind * parallel, [inter]])


def design(descriptors: np.ndarray, c: Candidate, cores: int) -> np.ndarray:
    """One regression row: the candidate's configuration crossed with the graph's descriptors."""
    return np.outer(config_features(c, cores), descriptors).ravel()


@dataclass
class RatioModel:
    weights: np.ndarray  # (len(design),) ridge weights on log2 ratios
    sigma: float  # residual std of the log2 ratio on the training rows
    cores: int  # the machine's physical cores the candidates were measured with
    rows: int = 0  # training ratios
    models: int = 0  # distinct models they came from

    @classmethod
    def fit(cls, samples: Sequence[tuple[GraphTable, Candidate, float]], cores: int, l2: float = 1.0) -> "RatioModel":
        """``samples``: (original model's graph, candidate, latency / default latency) per measurement."""
        if not samples:
            raise ValueError("no ratios to fit")
        descriptors = {id(t): graph_descriptors(t) for t, _, _ in samples}  # tables repeat, one per model
        X = np.stack([design(descriptors[id(t)], c, cores) for t, c, _ in samples])
        y = np.log2([r for _, _, r in samples])
        w = np.linalg.solve(X.T @ X + l2 * np.eye(X.shape[1]), X.T @ y)
        resid = y - X @ w
        return cls(w, float(np.sqrt(np.mean(resid ** 2))), cores, len(samples),
                   len({t.digest() for t, _, _ in samples}))

    def predict(self, t: GraphTable, candidates: Sequence[Candidate]) -> np.ndarray:
        """Ratio to the default configuration per candidate (exactly 1 for the default itself)."""
        d = graph_descriptors(t)
        X = np.stack([design(d, c, self.cores) for c in candidates])
        r = np.exp2(X @ self.weights)
        return np.where([is_default(c) for c in candidates], 1.0, r)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"format": FORMAT, "weights": self.weights.tolist(), "sigma": self.sigma,
                                          "cores": self.cores, "rows": self.rows, "models": self.models,
                                          "graph_features": GRAPH_FEATURES}) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "RatioModel":
        from narformer_tvm.fileio import read_model_json

        d = read_model_json(path, FORMAT, "configuration-ratio model", "fit one with examples/bench_tune_ort.py fit")
        return cls(np.array(d["weights"]), d["sigma"], d["cores"], d.get("rows", 0), d.get("models", 0))


class RatioPredictor:
    """tune-ort's predictor: the latency predictor at the default configuration times the ratios."""

    def __init__(self, ratios: RatioModel, latency_predictor):
        self.ratios, self.base = ratios, latency_predictor
        self.metadata = {"cores": ratios.cores}
        self.profile: dict = {}

    def predict_configs(self, graphs: dict[str, GraphTable], candidates: Sequence[Candidate]):
        """(mean ms, std ms) per candidate; ``graphs``: variant -> its graph (the fp32 one must be there)."""
        from narformer_tvm.graph.tokens import encode_table

        original = graphs["fp32"]
        mean, std = self.base.predict_encoded([encode_table(original, self.base.features)])
        ratio = self.ratios.predict(original, candidates)
        ms = float(mean[0]) * ratio
        # spread: the base's ensemble spread and the ratio's residual, combined in log space
        rel = math.hypot(float(std[0]) / max(float(mean[0]), 1e-9), (2 ** self.ratios.sigma) - 1)
        return ms, ms * rel


def ratio_samples(db: str | Path, include_noisy: bool = False) -> list[tuple[GraphTable, Candidate, float, str]]:
    """(original graph, candidate, latency / default latency, model key) for every candidate row of a
    dataset whose model was also measured under the default configuration."""
    from narformer_tvm.data.store import Store
    from narformer_tvm.integrations.ort_tuning import candidate_of

    rows = []
    with Store(db, readonly=True) as store:
        configs = {c["id"]: c["config"] for c in store.configs() if c["config"].get("runtime") == "onnxruntime"}
        for r in store.rows():
            if r["config_id"] in configs and r["latency_ms"] and (include_noisy or not r["noisy"]):
                c = candidate_of(configs[r["config_id"]], json.loads(r["source"] or "{}"))
                rows.append((r["key"].split(":")[0], c, r["latency_ms"], r["graph"], r["name"]))
    defaults = {key: (lat, graph) for key, c, lat, graph, _ in rows if is_default(c)}
    out = []
    for key, c, lat, _, name in rows:
        if key in defaults and not is_default(c):
            base_lat, graph = defaults[key]
            out.append((GraphTable.from_bytes(graph, name.split(":")[0]), c, lat / base_lat, key))
    return out
