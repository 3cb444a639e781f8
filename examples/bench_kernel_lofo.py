"""Leave-one-family-out with per-operator costs learned from ONNX Runtime's kernel times.

    narformer-tvm profile --zoo all --count 25 --seed 0 --kernels --no-regime-gate --db kernels.db
    python examples/bench_kernel_lofo.py --kernels kernels.db --labels profiles/cpu-onnxruntime/train \
        --out docs/results/kernel-lofo-zen4.md

`profile --kernels` stores ONNX Runtime's profiler records (one per kernel it ran, mean time over 12
runs). Each record is charged to the graph operator it ran: by node name, by output tensor (kernels
after the NCHWc layout transform are named ``<tensor>_nchwc``), by the longest node name it starts
with (fusions named after a node), and a fused kernel named after its last operator is charged to the
operator of its own type upstream (Conv+BatchNorm+ReLU, named after the ReLU's output, is the Conv's
time). Unmatched records (layout reorders, inserted reshapes) are left out.

Then, for each family in turn: a small MLP over one operator's features (op type, shapes, kernel,
stride, group, FLOPs, bytes, weights; no graph context) is fitted to the operator times of the other
11 families; a network's latency is ``c * sum of its operators' predictions``, with ``c`` the median of
measured over summed on those 11 families (the profiler's own overhead, the unmatched records), and is
scored against the end-to-end labels of ``--labels`` (regime-corrected) beside the FLOPs+MAC line
fitted to the same models. The question: do operator costs carry over to a family never seen where
whole-network corrections do not?
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import tempfile
from pathlib import Path

import numpy as np

FUSED_HEADS = {"FusedConv": "Conv", "FusedGemm": "Gemm", "FusedMatMul": "MatMul"}


def operator_times(proto, graph, records) -> tuple[np.ndarray, float]:
    """(per-operator ms, unmatched ms) of one network's kernel records (see the module docstring)."""
    index = {n.name: i for i, n in enumerate(graph.nodes)}
    producer = {o: index[n.name] for n in proto.graph.node if n.name in index for o in n.output}
    preds: dict[int, list[int]] = {}
    for a, b in graph.edges:
        preds.setdefault(b, []).append(a)
    by_length = sorted(index, key=len, reverse=True)
    times, unmatched = np.zeros(len(graph.nodes)), 0.0
    for name, op, us in records:
        name = name.removeprefix("fused ")
        i = index.get(name, producer.get(name.removesuffix("_nchwc")))
        if i is None:
            i = next((index[n] for n in by_length if name.startswith(n)), None)
        if i is None:
            unmatched += us / 1000
            continue
        want, j = FUSED_HEADS.get(op, op), i
        for _ in range(4):  # up the chain the runtime fused, to the operator of the kernel's type
            if graph.nodes[j].op_type == want or not preds.get(j):
                break
            j = next((p for p in preds[j] if graph.nodes[p].op_type == want), preds[j][0])
        times[j if graph.nodes[j].op_type == want else i] += us / 1000
    return times, unmatched


def operator_features(node) -> np.ndarray:
    from narformer_tvm.graph.tokens import SCALARS, VOCAB, node_scalars

    onehot = np.zeros(len(VOCAB) + 1)
    onehot[VOCAB.index(node.op_type) if node.op_type in VOCAB else len(VOCAB)] = 1
    geometry = node_scalars(node)[:SCALARS.index("n_inputs")]  # shapes, kernel, stride, pad, dilation, group, axis
    shapes = np.log2(1 + np.abs(np.array(geometry, dtype=np.float64)))
    counts = np.log2(1 + np.array([node.flops, node.memory, node.params, node.macs], dtype=np.float64)) / 4
    return np.concatenate([onehot, shapes, counts])


def load(kernels_db: str, labels_db: str) -> list[dict]:
    """Networks with kernel records and a clean label: operator features, operator times, label."""
    from narformer_tvm.graph.onnx_graph import build_graph, load_model
    from narformer_tvm.learn.samples import load_samples
    from narformer_tvm.measure.zoo import Variant

    labels = {s.key: s for s in load_samples(labels_db)[0]}
    con = sqlite3.connect(kernels_db)
    rows = con.execute("""SELECT me.id, mo.key, mo.source FROM measurements me JOIN models mo ON mo.id = me.model_id
                          WHERE me.error IS NULL AND me.pass = 'main' ORDER BY me.id""").fetchall()
    out = []
    for mid, key, source in rows:
        records = con.execute("SELECT name, op, mean_us FROM kernels WHERE measurement_id=?", (mid,)).fetchall()
        if key not in labels or not records:
            continue
        src = json.loads(source)
        variant = Variant(src["family"], src["seed"], src["index"], src["raw"])
        with tempfile.TemporaryDirectory() as d:
            path = variant.export(os.path.join(d, "model.onnx"))
            proto, graph = load_model(str(path))[0], build_graph(str(path))
        times, unmatched = operator_times(proto, graph, records)
        out.append({"family": src["family"], "sample": labels[key], "times": times, "unmatched": unmatched,
                    "x": np.stack([operator_features(n) for n in graph.nodes])})
    return out


def fit_operator_model(nets: list[dict], steps: int = 300, seed: int = 0):
    """MLP: operator features -> operator ms (exp output), full batch, loss = per-network L1 of operator times
    over the network's total + |log| of summed over total."""
    import torch
    import torch.nn as nn

    torch.manual_seed(seed)
    x = torch.tensor(np.concatenate([n["x"] for n in nets]), dtype=torch.float32)
    t = torch.tensor(np.concatenate([n["times"] for n in nets]), dtype=torch.float32)
    g = torch.cat([torch.full((len(n["times"]),), i) for i, n in enumerate(nets)])
    total = torch.zeros(len(nets)).index_add_(0, g, t)
    net = nn.Sequential(nn.Linear(x.shape[1], 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(), nn.Linear(128, 1))
    nn.init.zeros_(net[-1].weight)
    nn.init.constant_(net[-1].bias, math.log(0.03))  # a typical operator: 30 us
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

    def operator_ms(features):  # (N, F) -> (N,)
        return torch.exp(net(features).squeeze(-1).clamp(-20, 10))

    for _ in range(steps):
        p = operator_ms(x)
        per_op = torch.zeros(len(nets)).index_add_(0, g, (p - t).abs()) / total
        summed = torch.zeros(len(nets)).index_add_(0, g, p)
        loss = per_op.mean() + torch.log(summed / total).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()

    def predict(n: dict) -> float:
        with torch.no_grad():
            return float(operator_ms(torch.tensor(n["x"], dtype=torch.float32)).sum())
    return predict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", required=True, help="a dataset measured with `profile --kernels`")
    ap.add_argument("--labels", required=True, help="the dataset whose (gated) labels are scored against")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import torch

    from narformer_tvm.learn.train import LinearBaseline

    torch.set_num_threads(1)
    nets = load(args.kernels, args.labels)
    families = sorted({n["family"] for n in nets})
    lines = [f"# Leave-one-family-out from kernel times ({len(nets)} networks)", "",
             f"`python examples/bench_kernel_lofo.py --kernels {args.kernels} --labels {args.labels} --out {args.out}`",
             "", "MAPE on the held-out family's end-to-end labels; the last column: the operator model's summed "
             "prediction against the summed kernel times (before the factor c).", "",
             "| held out | n | FLOPs+MAC line | operator model x c | summed kernels |", "| --- | --- | --- | --- | --- |"]
    rows = []
    for fam in families:
        train = [n for n in nets if n["family"] != fam]
        test = [n for n in nets if n["family"] == fam]
        y = np.array([n["sample"].latency_ms for n in test])
        line = LinearBaseline(("flops", "memory")).fit([n["sample"] for n in train]).predict([n["sample"] for n in test])
        predict = fit_operator_model(train)
        c = float(np.median([n["sample"].latency_ms / predict(n) for n in train]))
        summed = np.array([predict(n) for n in test])
        kernels = np.array([n["times"].sum() for n in test])
        row = [100 * np.mean(np.abs(p - q) / q) for p, q in ((line, y), (c * summed, y), (summed, kernels))]
        rows.append(row)
        lines.append(f"| {fam} | {len(test)} | " + " | ".join(f"{v:.1f}%" for v in row) + " |")
        print(lines[-1], flush=True)
    lines.append("| **average** | | " + " | ".join(f"**{v:.2f}%**" for v in np.mean(rows, 0)) + " |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
