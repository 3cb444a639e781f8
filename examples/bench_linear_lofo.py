"""Leave-one-family-out with linear latency models of more structure than FLOPs + memory access.

    python examples/bench_linear_lofo.py --db profiles/cpu-onnxruntime/dataset.db \
        --out docs/results/linear-lofo.md

Each model is latency = w . features, fitted (relative least squares, as the FLOPs+MAC baseline) on
every model of 11 families and scored on the 12th, for each family in turn:

- ``flops_mac``: total GFLOPs, GB of memory traffic, 1 (the baseline of `evaluate`);
- ``+nodes``: the same plus the operator count (a fixed cost per operator);
- ``+params``: the same plus the weight count (weights streamed at batch 1 cost more than activations
  that stay in cache);
- ``by_kind``: GFLOPs and GB of dense convolutions, of grouped/depthwise convolutions and of all
  other operators separately, the operator count, 1.

The question: is the error left after FLOPs+MAC explained by how the work splits over operator kinds?
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

KINDS = ("flops_mac", "+nodes", "+params", "by_kind")


def features(table, kind: str) -> list[float]:
    from narformer_tvm.features import STATIC, kind_counts, node_costs, static_count

    if kind == "by_kind":
        return list(kind_counts(table))
    flops, memory = node_costs(table).astype(np.float64).sum(0)  # GFLOPs, GB
    if kind == "flops_mac":
        return [flops, memory, 1.0]
    if kind == "+nodes":
        return [flops, memory, len(table.ops), 1.0]
    return [flops, memory, static_count(float(table.static[STATIC.index("log_params")])) / 1e9, 1.0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--out", required=True, help="Markdown file; a .json beside it keeps the numbers")
    args = ap.parse_args()

    from narformer_tvm.train import load_samples, relative_lstsq

    samples, _ = load_samples(args.db, None, None)
    y = np.array([s.latency_ms for s in samples])
    family = np.array([s.family for s in samples])
    families = sorted(set(family))
    result = {}
    for kind in KINDS:
        x = np.array([features(s.table, kind) for s in samples])
        per = {}
        for f in families:
            train, test = family != f, family == f
            pred = np.maximum(x[test] @ relative_lstsq(x[train], y[train]), 1e-6)
            per[f] = float(100 * np.mean(np.abs(pred - y[test]) / y[test]))
        result[kind] = {"average": float(np.mean(list(per.values()))), "per_family": per}
    lines = ["# Linear latency models, leave-one-family-out", "",
             f"`python examples/bench_linear_lofo.py --db {args.db} --out ...` ({len(samples)} models, "
             f"{len(families)} families; MAPE on each held-out family).", "",
             "| held out | " + " | ".join(KINDS) + " |", "| --- |" + " --- |" * len(KINDS)]
    for f in families:
        lines.append(f"| {f} | " + " | ".join(f"{result[k]['per_family'][f]:.1f}%" for k in KINDS) + " |")
    lines.append("| **average** | " + " | ".join(f"**{result[k]['average']:.2f}%**" for k in KINDS) + " |")
    out = Path(args.out)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
