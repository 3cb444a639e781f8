"""Predicting latency of ONNX files with a shipped hardware profile or a checkpoint."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from narformer_tvm.errors import InputError, NarformerError
from narformer_tvm.graph.onnx_graph import OpGraph, build_graph


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


RARE_OP_MODELS = 5  # an op type in fewer training models than this is one the predictor barely knows
RANGE_MARGIN = 2.0  # MACs or operator counts this far beyond the training range: extrapolation


def coverage(tables) -> dict:
    """What a predictor's training models spanned (their GraphTables): per op type the number of
    models holding it, and the range of MACs and of operator counts."""
    from narformer_tvm.graph.tokens import STATIC, static_count

    ops: dict[str, int] = {}
    macs, nodes = [], []
    for t in tables:
        for op in set(t.ops):
            ops[op] = ops.get(op, 0) + 1
        macs.append(int(static_count(float(t.static[STATIC.index("log_macs")]))))  # back from the static features
        nodes.append(len(t.ops))
    return {"models": len(macs), "op_types": dict(sorted(ops.items())), "macs": [min(macs), max(macs)],
            "nodes": [min(nodes), max(nodes)]}


def merge_coverage(a: dict | None, b: dict | None) -> dict | None:
    """The coverage of two training sets together (a fine-tuned predictor saw both)."""
    if not a or not b:
        return a or b
    ops = {op: a["op_types"].get(op, 0) + b["op_types"].get(op, 0) for op in {*a["op_types"], *b["op_types"]}}
    return {"models": a["models"] + b["models"], "op_types": dict(sorted(ops.items())),
            **{k: [min(a[k][0], b[k][0]), max(a[k][1], b[k][1])] for k in ("macs", "nodes")}}


def outside_training(graph: OpGraph, cov: dict | None) -> list[str]:
    """Why a prediction for ``graph`` extrapolates beyond the predictor's training models (empty: it
    does not, or the predictor records no coverage)."""
    if not cov:
        return []
    reasons = []
    ops = {n.op_type for n in graph.nodes}
    unseen = sorted(op for op in ops if op not in cov["op_types"])
    rare = sorted(op for op in ops if 0 < cov["op_types"].get(op, 0) < RARE_OP_MODELS)
    if unseen:
        reasons.append(f"op types never seen in training: {', '.join(unseen)}")
    if rare:
        reasons.append(f"op types in fewer than {RARE_OP_MODELS} training models: {', '.join(rare)}")
    for key, value, unit in (("macs", graph.macs, "MACs"), ("nodes", len(graph.nodes), "operators")):
        lo, hi = cov[key]
        if value > RANGE_MARGIN * hi or value < lo / RANGE_MARGIN:
            reasons.append(f"{value:,} {unit}, training spanned {lo:,}-{hi:,}")
    return reasons


@dataclass
class Estimate:
    path: Path
    latency_ms: float | None = None
    spread_ms: float | None = None  # ensemble std (0 for a single model)
    graph: OpGraph | None = None
    error: NarformerError | None = None
    outside: list[str] = field(default_factory=list)  # why the prediction extrapolates, if it does

    def to_dict(self) -> dict:
        d = {"model": str(self.path), "latency_ms": self.latency_ms, "spread_ms": self.spread_ms}
        if self.graph is not None:
            d.update(nodes=len(self.graph.nodes), macs=self.graph.macs, params=self.graph.params,
                     batch_size=self.graph.batch_size)
        if self.error is not None:
            d["error"] = str(self.error)
        if self.outside:
            d["outside_training"] = self.outside
        return d


def estimate(paths: Sequence[str | Path], predictor, input_shapes: dict | None = None,
             batch_size: int | None = None, training: dict | None = None) -> list[Estimate]:
    """Predict every model with a loaded predictor (``model.load.load_predictor``); a model that cannot
    be read gets its error, the others still run. ``training``: the predictor's coverage, to say which
    predictions extrapolate."""
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
            r.outside = outside_training(r.graph, training)
    return results
