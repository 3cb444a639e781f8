"""Does tune-ort's configuration-ratio model (fitted on the base profile's CPU across ONNX Runtime
configurations) bring the shipped predictor closer to another configuration before `calibrate` rescales it?
Rescalings only, chosen as `calibrate` chooses them, on each budget's calibration rows; scored on test models.

    python examples/bench_config_ratio_base.py --profile bench-cal-t1 --test-db DATASET --threads 1 --out FILE.md
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from bench_calibrate import budget_rows, profiling_clock, test_models

    from narformer_tvm.calibrate import accuracy, adapt, base_view, methods_of
    from narformer_tvm.integrations.ort_config_ratio import RatioModel
    from narformer_tvm.integrations.ort_tuning import Candidate
    from narformer_tvm.learn.samples import load_samples
    from narformer_tvm.model.load import load_predictor
    from narformer_tvm.profiles import list_profiles, resolve_predictor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True, help="a calibrated user profile (its calibration.db)")
    ap.add_argument("--base", default="cpu-onnxruntime")
    ap.add_argument("--test-db", required=True, help="models measured under the same configuration (mean of passes)")
    ap.add_argument("--threads", type=int, required=True, help="the configuration's intra-op threads")
    ap.add_argument("--budgets", default="2,5,10")
    ap.add_argument("--exclude", default="", help="test models to leave out, by name (comma-separated)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    folder = list_profiles()[args.profile]
    cal, _ = load_samples(folder / "calibration.db")
    test = test_models(load_samples(args.test_db, mean_passes=True)[0], cal, args.exclude)
    base = load_predictor(resolve_predictor(args.base))
    ratios = RatioModel.load(list_profiles()[args.base] / "ort-ratios.json")
    candidate = [Candidate(threads=args.threads)]
    ratio = lambda ss: np.array([ratios.predict(s.table, candidate)[0] for s in ss])  # noqa: E731
    (p_cal, s_cal), (p_test, s_test) = base_view(base, cal), base_view(base, test)
    r_cal, r_test = ratio(cal), ratio(test)
    t_cal, t_test = np.array([s.latency_ms for s in cal]), np.array([s.latency_ms for s in test])
    spread = lambda p: float(np.std(np.log(t_cal / p)))  # noqa: E731
    methods = methods_of(folder, args.base)
    at = profiling_clock(folder / "calibration.db")
    clock = np.array([at[s.key] for s in cal])
    lines = [f"# The configuration-ratio model as a starting point for `calibrate` ({args.threads} thread(s))", "",
             f"Calibration `{args.profile}` ({len(cal)} rows), test `{args.test_db}` ({len(test)} models never "
             f"calibrated on; labels: mean of passes{'; left out: ' + args.exclude if args.exclude else ''}). "
             f"The ratio model's {args.threads}-thread / default ratio on the test models: median "
             f"{np.median(r_test):.2f} ({r_test.min():.2f}-{r_test.max():.2f}). On the calibration rows, measured over "
             f"predicted: median {np.median(t_cal / p_cal):.2f} for the base, {np.median(t_cal / (p_cal * r_cal)):.2f} "
             f"for base x ratio; spread (std of log) {spread(p_cal):.3f} and {spread(p_cal * r_cal):.3f}.", "",
             "| profiling (min) | rows | start | chosen | test MAPE | scaled | loglinear | descriptors |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for minutes in [float(b) for b in args.budgets.split(",")]:
        k, fit, _ = budget_rows(cal, clock, minutes)
        for label, pc, pt in (("base", p_cal, p_test), ("base x ratio", p_cal * r_cal, p_test * r_test)):
            out = adapt([cal[i] for i in fit], pc[fit], s_cal[fit], methods, None)
            acc = {m: accuracy(out.predict(m, test, pt, s_test), t_test)["mape"] for m in out.errors}
            lines.append(f"| {minutes:g} | {len(k)} | {label} | {out.method} | {100 * acc[out.method]:.1f}% | "
                         + " | ".join(f"{100 * acc[m]:.1f}%" for m in ("scaled", "loglinear", "descriptors")) + " |")
        print(lines[-2], lines[-1], sep="\n", flush=True)
    lines += ["", "Reproduce:", "", "```bash", f"python examples/bench_config_ratio_base.py --profile {args.profile} "
              f"--test-db {args.test_db} --threads {args.threads} --budgets {args.budgets}"
              + (f" --exclude {args.exclude}" if args.exclude else "") + f" --out {args.out}", "```", ""]
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
