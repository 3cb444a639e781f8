"""Leave-one-family-out with linear latency models of more structure than FLOPs + memory access.

    python examples/bench_linear_lofo.py --db profiles/cpu-onnxruntime/train \
        --out docs/results/linear-lofo.md

Each model is latency = w . features, fitted (relative least squares, as the FLOPs+MAC baseline) on
every model of 11 families and scored on the 12th, for each family in turn:

- ``flops_mac``: total GFLOPs, GB of memory traffic, 1 (the baseline of `evaluate`);
- ``+nodes``: the same plus the operator count (a fixed cost per operator);
- ``+params``: the same plus the weight count (weights streamed at batch 1 cost more than activations
  that stay in cache);
- ``by_kind``: GFLOPs and GB of dense convolutions, of grouped/depthwise convolutions and of all
  other operators separately, the operator count, 1;
- ``by_kind+fc``: the same plus the GB of Gemm/MatMul weights alone (fully connected weights are read
  once per inference; convolution weights are reused across positions).

With ``--blend RESULTS`` (a leave-one-family-out ``results.json`` of ``evaluate``), also the geometric
blend ``line^(1-a) * model^a`` of each of its learned methods with the flops_mac and by_kind lines for
a = 0, 0.1, ..., 1: how far shrinking the learned correction toward a line could go, were ``a``
known (it is read off the test families here, so the best row is a bound, not a result); and each
learned method with each held-out family's median error taken out (another bound: the error left
were every family's level right).

The question: is the error left after FLOPs+MAC explained by how the work splits over operator kinds?
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

KINDS = ("flops_mac", "+nodes", "+params", "by_kind", "by_kind+fc")


def features(table, kind: str) -> list[float]:
    from narformer_tvm.graph.tokens import (
        LOG_SCALE,
        SCALARS,
        STATIC,
        kind_counts,
        node_costs,
        static_count,
    )

    if kind == "by_kind":
        return list(kind_counts(table))
    if kind == "by_kind+fc":
        fc = np.isin(np.array(table.ops, dtype=object), ["Gemm", "MatMul"])
        params = 2.0 ** (table.scalars[fc, SCALARS.index("log_params")] / LOG_SCALE) - 1.0
        return [*kind_counts(table)[:-1], 4 * params.sum() / 1e9, 1.0]
    flops, memory = node_costs(table).astype(np.float64).sum(0)  # GFLOPs, GB
    if kind == "flops_mac":
        return [flops, memory, 1.0]
    if kind == "+nodes":
        return [flops, memory, len(table.ops), 1.0]
    return [flops, memory, static_count(float(table.static[STATIC.index("log_params")])) / 1e9, 1.0]


def blend_table(results_path: str, lines_pred: dict[str, dict[str, float]], y: dict[str, float]) -> list[str]:
    """Geometric blends of each learned method in a LOFO results.json with each line (see the docstring)."""
    runs = [r for r in json.loads(Path(results_path).read_text()) if r["protocol"] == "lofo"]
    learned = sorted({r["method"] for r in runs} - set(KINDS) - {"flops"})
    weights = np.round(np.linspace(0, 1, 11), 1)
    out = ["", f"Geometric blends `line^(1-a) * model^a` with the models of `{results_path}` (average MAPE over its "
           "held-out families; the best `a` is read off those test families: a bound, not a result):", "",
           "| model | line | " + " | ".join(f"a={a:g}" for a in weights) + " |", "| --- | --- |" + " --- |" * len(weights)]
    for method in learned:
        for line in ("flops_mac", "by_kind"):
            folds = [(np.log(np.maximum(r["pred"], 1e-6)), np.log([lines_pred[line][n] for n in r["names"]]),
                      np.array([y[n] for n in r["names"]])) for r in runs if r["method"] == method]
            avg = [100 * np.mean([np.mean(np.abs(np.exp(a * model + (1 - a) * base) / truth - 1))
                                  for model, base, truth in folds]) for a in weights]
            best = int(np.argmin(avg))
            out.append(f"| {method} | {line} | " + " | ".join(
                f"**{v:.2f}%**" if i == best else f"{v:.2f}%" for i, v in enumerate(avg)) + " |")
    out += ["", "Each learned method with each held-out family's median error taken out (a family-level bias known "
            "only after the fact: what would be left were every family's level right, a bound):", "",
            "| model | as run | bias taken out |", "| --- | --- | --- |"]
    for method in learned:
        raw, debiased = [], []
        for r in runs:
            if r["method"] == method:
                err = np.log(np.maximum(r["pred"], 1e-6) / np.array(r["true"]))
                raw.append(np.mean(np.abs(np.exp(err) - 1)))
                debiased.append(np.mean(np.abs(np.exp(err - np.median(err)) - 1)))
        out.append(f"| {method} | {100 * np.mean(raw):.2f}% | {100 * np.mean(debiased):.2f}% |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--out", required=True, help="Markdown file; a .json beside it keeps the numbers")
    ap.add_argument("--blend", help="a leave-one-family-out results.json of `evaluate` on the same dataset")
    args = ap.parse_args()

    from narformer_tvm.learn.samples import load_samples
    from narformer_tvm.learn.train import relative_lstsq

    samples, _ = load_samples(args.db, None, None)
    y = np.array([s.latency_ms for s in samples])
    family = np.array([s.family for s in samples])
    names = [s.name for s in samples]
    families = sorted(set(family))
    result, predictions = {}, {}
    for kind in KINDS:
        x = np.array([features(s.table, kind) for s in samples])
        per, predictions[kind] = {}, {}
        for f in families:
            train, test = family != f, family == f
            pred = np.maximum(x[test] @ relative_lstsq(x[train], y[train]), 1e-6)
            per[f] = float(100 * np.mean(np.abs(pred - y[test]) / y[test]))
            predictions[kind].update(zip((n for n, t in zip(names, test) if t), pred))
        result[kind] = {"average": float(np.mean(list(per.values()))), "per_family": per}
    blend = f" --blend {args.blend}" if args.blend else ""
    lines = ["# Linear latency models, leave-one-family-out", "",
             f"`python examples/bench_linear_lofo.py --db {args.db}{blend} --out ...` ({len(samples)} models, "
             f"{len(families)} families; MAPE on each held-out family).", "",
             "| held out | " + " | ".join(KINDS) + " |", "| --- |" + " --- |" * len(KINDS)]
    for f in families:
        lines.append(f"| {f} | " + " | ".join(f"{result[k]['per_family'][f]:.1f}%" for k in KINDS) + " |")
    lines.append("| **average** | " + " | ".join(f"**{result[k]['average']:.2f}%**" for k in KINDS) + " |")
    if args.blend:
        lines += blend_table(args.blend, predictions, dict(zip(names, y)))
    out = Path(args.out)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
