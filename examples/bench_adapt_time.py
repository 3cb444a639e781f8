"""How long `calibrate`'s trained adaptations take: the fold models trained one after another in this
process (torch on every core) against side by side (one process and one torch thread per core), on the
same calibration rows, in one run.

    python examples/bench_adapt_time.py --profile bench-cal --rows 94 --out docs/results/adapt-time.md
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from narformer_tvm.calibrate import FOLD_ROWS, FOLDS, adapt, base_view, finetune_checkpoint, held_out, methods_of
    from narformer_tvm.learn.samples import load_samples
    from narformer_tvm.learn.side_by_side import available_cores
    from narformer_tvm.model.load import load_predictor
    from narformer_tvm.profiles import list_profiles, resolve_predictor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True, help="a calibrated user profile (its calibration.db)")
    ap.add_argument("--base", default="cpu-onnxruntime")
    ap.add_argument("--rows", type=int, default=0, help="the first N calibration rows in measuring order (0: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/adapt-time.md")
    args = ap.parse_args()

    folder = list_profiles()[args.profile]
    samples, _ = load_samples(folder / "calibration.db")
    samples = samples[:args.rows] if args.rows else samples
    fit = [s for s, test in zip(samples, held_out([s.key for s in samples])) if not test]  # as calibrate fits
    pred, shape = base_view(load_predictor(resolve_predictor(args.base)), fit)
    methods = methods_of(folder, args.base)
    ckpt = finetune_checkpoint(args.base)
    runs = {}
    for label, processes in (("one after another, torch on every core", 1), ("side by side", None)):
        t0 = time.time()
        out = adapt(fit, pred, shape, methods, ckpt, processes=processes)
        runs[label] = {"processes": processes or available_cores(), "seconds": time.time() - t0,
                       "training_s": out.seconds["training"], "method": out.method,
                       "cv_mape": {m: float(e.mean()) for m, e in out.errors.items()}}
        print(label, json.dumps(runs[label]), flush=True)
    args.out.with_suffix(".json").write_text(json.dumps({"rows": len(fit), "runs": runs}, indent=2) + "\n")
    serial, parallel = runs.values()
    lines = ["# `calibrate`'s trained adaptations: one after another or side by side", "",
             f"{len(fit)} calibration rows of `{args.profile}` (the first {len(samples)} measured, less the held-out "
             f"quarter), {FOLDS} folds: {2 * FOLDS if len(fit) <= FOLD_ROWS else 2} trainings (fine-tuned and from scratch). "
             f"Machine: {platform.processor() or platform.machine()}, {available_cores()} cores.", "",
             "| how | processes | training s | adaptation s | chosen | cross-validated MAPE (fine-tuned, scratch) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for label, r in runs.items():
        lines.append(f"| {label} | {r['processes']} | {r['training_s']:.0f} | {r['seconds']:.0f} | {r['method']} | "
                     f"{100 * r['cv_mape']['finetune']:.1f}%, {100 * r['cv_mape']['scratch']:.1f}% |")
    lines += ["", f"Side by side took {parallel['training_s'] / serial['training_s']:.2f}x the time of one after another.",
              "", "Reproduce:", "", "```bash",
              f"python examples/bench_adapt_time.py --profile {args.profile} --rows {args.rows} --out "
              f"{args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}", "```", ""]
    args.out.write_text("\n".join(lines))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
