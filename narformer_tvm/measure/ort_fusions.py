"""What ONNX Runtime fuses in a model, read from the graph it saves after optimising: the ground truth
that ``graph.fusion``'s rules are checked against."""
from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx

from narformer_tvm.graph.fusion import NCHWC_ACTIVATIONS, duplicate_groups, fused_edges, fusion_flags
from narformer_tvm.graph.onnx_graph import OpGraph, build_graph
from narformer_tvm.graph.tokens import table

# Ops that ORT moves, merges or eliminates without fusing compute (the transpose optimiser, reshape
# merging, no-op casts): outside what the fusion rules describe.
LAYOUT = frozenset({"Cast", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Flatten", "Slice", "Expand", "Gather",
                    "Split", "Transpose"})
_VIEWS = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose"}  # ORT may give their names to the data


def optimised(path: str | Path, level: str = "extended") -> onnx.ModelProto:
    """The graph ONNX Runtime's CPU provider runs for ``path`` at ``level`` (basic | extended | all)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        so.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return onnx.load(so.optimized_model_filepath)


def unwritten_outputs(path: str | Path, level: str = "extended") -> tuple[OpGraph, np.ndarray]:
    """``build_graph(path)``, and per operator whether ORT (at ``level``, basic or
    extended, which keep the names of what they do not fuse) computes its output inside a fused kernel:
    the tensor is gone from the optimised graph, and not merely renamed through a view or a moved Transpose."""
    model = onnx.load(str(path), load_external_data=False)
    opt = optimised(path, level)
    survive = {o for n in opt.graph.node for o in n.output} | {o.name for o in model.graph.output}
    readers = defaultdict(list)
    for n in model.graph.node:
        for x in n.input:
            readers[x].append(n)

    def written(tensor: str) -> bool:
        return tensor in survive or bool(readers[tensor]) and all(
            r.op_type in _VIEWS and written(r.output[0]) for r in readers[tensor])

    by_name = {n.name or f"{n.op_type}_{k}": n for k, n in enumerate(model.graph.node)}  # as build_graph names them
    graph = build_graph(path)
    return graph, np.array([not written(by_name[n.name].output[0]) for n in graph.nodes])


def nchwc_fusions(path: str | Path) -> dict[str, int]:
    """Convolutions of ORT's level-``all`` graph that add a residual in ("sum") or apply an activation."""
    opt = optimised(path, "all")
    convs = [n for n in opt.graph.node if n.op_type in ("Conv", "FusedConv")]
    return {"sum": sum(n.domain.endswith("nchwc") and len([x for x in n.input if x]) == 4 for n in convs),
            "activation": sum(any(a.name == "activation" for a in n.attribute) for n in convs)}


def check_rules(path: str | Path, level: str = "extended") -> dict:
    """The fusion rules against ORT on one model at ``level`` (basic | extended): per compute operator
    (layout ops left out), whether ORT keeps its output inside a kernel and whether the rules say so.
    Which of a duplicate group ORT keeps is its own choice: within a group only the count is compared.
    Then the NCHWc fusions of level all, counted by ORT and by the rules."""
    graph, unwritten = unwritten_outputs(path, level)
    t = table(graph)
    ops = t.ops
    predicted = fusion_flags(t, level)[:, 0].astype(bool)
    for group in duplicate_groups(t):
        if predicted[group].sum() == unwritten[group].sum():
            predicted[group] = unwritten[group]
    compute = np.array([op not in LAYOUT for op in ops])
    missed, extra = compute & unwritten & ~predicted, compute & predicted & ~unwritten
    edges = fused_edges(t, "all")
    into = {c: p for p, c in edges}

    def root(i):  # the operator that hosts i's fused kernel (a Pad folded into a Conv is not)
        while i in into and t.ops[i] != "Conv":
            i = into[i]
        return i

    return {"compared": int(compute.sum()), "fused": int((compute & unwritten).sum()),
            "missed": [ops[i] for i in np.flatnonzero(missed)], "extra": [ops[i] for i in np.flatnonzero(extra)],
            "ort": nchwc_fusions(path),
            "rules": {"sum": sum(t.ops[p] == "Conv" and t.ops[c] == "Add" for p, c in edges),
                      "activation": sum(t.ops[c] in NCHWC_ACTIVATIONS and t.ops[root(c)] == "Conv" for c in into)}}
