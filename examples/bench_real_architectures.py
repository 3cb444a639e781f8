"""How far off a shipped predictor is on real architectures it never trained on, in one run.

    python examples/export_networks.py $(python examples/export_networks.py --list) --out nets/zoo
    narformer-tvm zoo --family corpus --count 1 --standard --out nets/corpus
    narformer-tvm profile nets/zoo nets/corpus --db DATASET
    python examples/bench_real_architectures.py --db DATASET --predictor cpu-onnxruntime --out docs/results/real-architectures.md

The zoo's published networks (ResNet-50, MobileNetV2, ... from the project's own torch code) are the
reference: measured in the same sitting as the real architectures (transformers' BERT, GPT-2, Swin,
...), they give the level of this machine against the profile's hardware. The real architectures are
scored raw and with that one level factor, so that a machine running a few percent slower or faster
than the profile's does not pass for an error of the predictor. Models graph-identical to the
predictor's training data are left out.
"""
from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

from narformer_tvm.learn.evaluate import predictions_on_unseen
from narformer_tvm.learn.metrics import summary
from narformer_tvm.measure import families, zoo


def kind_of(name: str) -> str | None:
    """'reference' (a zoo published network), 'corpus' (a real architecture), or None."""
    if name in families.STANDARD:
        return "reference"
    corpus_names = zoo.standard_names(zoo.CORPUS)
    if name in corpus_names or re.sub(r"-s\d+-\d+$", "", name) in zoo.CORPUS:
        return "corpus"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--predictor", default="cpu-onnxruntime", help="a profile name or a predictor file")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    profile, samples, pred, cfg, left_out = predictions_on_unseen(args.db, args.predictor)
    groups = {"reference": [], "corpus": []}
    for s, p in zip(samples, pred):
        kind = kind_of(s.name)
        if kind:
            groups[kind].append((s, float(p)))
    ref = groups["reference"]
    level = statistics.median(s.latency_ms / p for s, p in ref) if ref else 1.0

    def row(title, items, factor=1.0):
        y = [s.latency_ms for s, _ in items]
        p = [factor * q for _, q in items]
        m = summary(p, y)
        bias = statistics.median(q / t - 1 for q, t in zip(p, y))
        return (f"| {title} | {m['n']} | {100 * m['mape']:.2f}% | {100 * m['acc10']:.0f}% | {100 * bias:+.1f}% | "
                f"{m['kendall_tau']:.3f} |")

    fp = cfg.get("fingerprint", {})
    lines = ["# Real architectures the predictor never trained on", "",
             f"`python examples/bench_real_architectures.py --db {args.db} --predictor {args.predictor} --out {args.out}`",
             "", f"Predictor `{args.predictor}` ({profile.get('labels')} labels). Measured on `{fp.get('cpu_id')}` "
             f"(flags `{fp.get('cpu_flags')}`), ONNX Runtime {fp.get('onnxruntime')}, "
             f"{cfg['config'].get('threads')} threads; {left_out} models graph-identical to training data left out.",
             "", f"This machine against the profile's hardware, from the reference networks: measured / predicted = "
             f"{level:.3f} (median).", "",
             "| models | n | MAPE | Acc(10%) | median bias (pred/measured - 1) | Kendall tau |",
             "| --- | --- | --- | --- | --- | --- |",
             row("zoo published networks (reference), raw", ref),
             row("real architectures (transformers), raw", groups["corpus"]),
             row("real architectures, level-corrected", groups["corpus"], level), "",
             "| model | measured ms | predicted ms (level-corrected) | error |", "| --- | --- | --- | --- |"]
    for s, p in sorted(groups["corpus"], key=lambda sp: sp[0].name):
        lines.append(f"| {s.name} | {s.latency_ms:.3f} | {level * p:.3f} | {100 * (level * p / s.latency_ms - 1):+.1f}% |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
