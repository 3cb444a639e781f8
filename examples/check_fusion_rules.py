"""How often the fusion rules (narformer_tvm.graph.fusion) agree with ONNX Runtime's optimised graph, on
one exported network of each zoo family and corpus model type.

    python examples/check_fusion_rules.py --out docs/results/fusion-rules.md [--families resnet,bert] [--level basic]

Per network: the compute operators compared (layout ops that ORT moves rather than fuses are left
out), those whose output ORT keeps inside a fused kernel, and the rules' misses and false fusions at
``--level`` (extended by default; it and basic keep the names of what they do not fuse); then the
NCHWc convolutions (level all) with a residual sum and with an activation, counted by ORT and by the
rules.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from narformer_tvm.measure import zoo
from narformer_tvm.measure.ort_fusions import check_rules


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default=None, help="comma-separated (default: every zoo family and corpus type)")
    ap.add_argument("--out", type=Path, default=None, help="markdown table to write")
    ap.add_argument("--level", choices=["basic", "extended"], default="extended", help="ORT optimisation level")
    args = ap.parse_args()
    families = args.families.split(",") if args.families else zoo.family_names("all") + zoo.family_names("corpus")
    lines = ["| network (variant 0) | compute ops | fused by ORT | rules missed | rules extra | which | "
             "NCHWc sums ORT / rules | conv activations ORT / rules |", "| --- | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    totals = np.zeros(4, dtype=int)
    with tempfile.TemporaryDirectory() as tmp:
        for fam in families:
            v = zoo.variant(fam, 0, 0)
            r = check_rules(v.export(Path(tmp) / f"{v.name}.onnx"), args.level)
            which = ", ".join([f"missed {o}" for o in sorted(set(r["missed"]))] + [f"extra {o}" for o in sorted(set(r["extra"]))])
            totals += [r["compared"], r["fused"], len(r["missed"]), len(r["extra"])]
            lines.append(f"| {v.name} | {r['compared']} | {r['fused']} | {len(r['missed'])} | {len(r['extra'])} | {which} | "
                         f"{r['ort']['sum']} / {r['rules']['sum']} | {r['ort']['activation']} / {r['rules']['activation']} |")
            print(lines[-1], flush=True)
    agree = 1 - (totals[2] + totals[3]) / totals[0]
    lines.append(f"| **all {len(families)}** | {totals[0]} | {totals[1]} | {totals[2]} | {totals[3]} | "
                 f"agreement {100 * agree:.1f}% | | |")
    print(lines[-1])
    if args.out:
        cmd = (f"python examples/check_fusion_rules.py --out {args.out}" + (f" --families {args.families}" if args.families else "")
               + (f" --level {args.level}" if args.level != "extended" else ""))
        args.out.write_text(f"# Fusion rules against ONNX Runtime's optimised graphs (level {args.level})\n\n" + __doc__.split("\n\n", 2)[2]
                            + "\n" + "\n".join(lines) + f"\n\nReproduce: `{cmd}`\n")


if __name__ == "__main__":
    main()
