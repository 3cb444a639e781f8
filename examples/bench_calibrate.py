"""How accurate `calibrate` makes a shipped predictor on networks outside its calibration set.

    narformer-tvm calibrate --budget 10m --name bench-cal        # or this script's --budget
    python examples/bench_calibrate.py --test-db profiles/cpu-onnxruntime/real-architectures \
        --budgets 2,5,10 --out docs/results/calibrate.md

For each budget (minutes of profiling, taken as prefixes of one calibration run so that the curve
costs one run of the largest budget) the calibration rows measured within it are split and adapted
exactly as `calibrate` does, and the result is scored on the test dataset: models measured on this
machine under the same configuration and never in the calibration set (the published networks of the
zoo and the real-architecture corpus). Beside it: the unadapted base, and NAR-Former-free FLOPs+MAC
regression fitted on the same calibration rows.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from narformer_tvm.calibrate import METHODS, accuracy, apply, fit_method, split_of
    from narformer_tvm.graph.tokens import encode_table
    from narformer_tvm.learn.train import LinearBaseline
    from narformer_tvm.learn.samples import load_samples
    from narformer_tvm.model.load import load_predictor
    from narformer_tvm.profiles import list_profiles, resolve_predictor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="bench-cal", help="the calibrated user profile (its calibration.db)")
    ap.add_argument("--base", default="cpu-onnxruntime")
    ap.add_argument("--test-db", required=True, help="models measured here under the same configuration")
    ap.add_argument("--budgets", default="2,5,10", help="minutes of profiling")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/calibrate.md")
    ap.add_argument("--test-how", default="", help="the command that measured --test-db, for the reproduce block")
    args = ap.parse_args()

    folder = list_profiles()[args.profile]
    cal, _ = load_samples(folder / "calibration.db")
    test, _ = load_samples(args.test_db)
    cal_digests = {s.table.digest() for s in cal}
    test = [s for s in test if s.table.digest() not in cal_digests]
    base = load_predictor(resolve_predictor(args.base))
    predict = lambda ss: base.predict_encoded([encode_table(s.table, base.features) for s in ss])[0]  # noqa: E731
    p_cal, p_test = predict(cal), predict(test)
    t_cal, t_test = np.array([s.latency_ms for s in cal]), np.array([s.latency_ms for s in test])
    at = measured_at(folder / "calibration.db")
    t = np.array([at[s.key] for s in cal])
    rows = []
    for minutes in [float(b) for b in args.budgets.split(",")]:
        keep = np.flatnonzero(t - t.min() <= 60 * minutes)
        k = np.zeros(len(cal), bool)
        k[keep] = True
        parts = {p: k & np.array([split_of(s.key) == p for s in cal]) for p in ("train", "val", "test")}
        val = {m: np.mean(np.abs(apply(fit_method(m, p_cal[parts["train"]], t_cal[parts["train"]]),
                                       p_cal[parts["val"]]) - t_cal[parts["val"]]) / t_cal[parts["val"]])
               for m in METHODS}
        best = min(val, key=val.get)
        fitted = fit_method(best, p_cal[parts["train"] | parts["val"]], t_cal[parts["train"] | parts["val"]])
        lin = LinearBaseline(("flops", "memory")).fit([cal[i] for i in np.flatnonzero(parts["train"] | parts["val"])])
        rows.append({"minutes": minutes, "calibration_models": int(k.sum()), "method": best,
                     "calibrated": accuracy(apply(fitted, p_test), t_test),
                     "held_out_calibration": accuracy(apply(fitted, p_cal[parts["test"]]), t_cal[parts["test"]]),
                     "flops_mac": accuracy(np.array(lin.predict(test)), t_test)})
        print(json.dumps(rows[-1]), flush=True)
    base_acc = accuracy(p_test, t_test)
    here = json.loads((folder / "profile.json").read_text())
    here_fp = here.get("fingerprint") or {}
    base_fp = json.loads((list_profiles()[args.base] / "profile.json").read_text()).get("fingerprint") or {}
    diffs = "; ".join(f"{k} {base_fp[k]!r} -> {here_fp.get(k)!r}" for k in base_fp if base_fp[k] != here_fp.get(k))
    lines = [f"# `calibrate`: the shipped `{args.base}` predictor adapted on this machine", "",
             f"Calibration: `{folder}` ({len(cal)} models measured in all); test: `{args.test_db}`, "
             f"{len(test)} models never in the calibration set. This machine against the base profile's: "
             f"{diffs or 'same'}"
             f"; configuration {json.dumps(here.get('config'), sort_keys=True)}. Unadapted base on the test models: MAPE "
             f"{100 * base_acc['mape']:.1f}%, Acc(10%) {100 * base_acc['acc10']:.0f}%, bias {100 * base_acc['bias']:+.0f}%.",
             "", "| profiling (min) | calibration models | adaptation | test MAPE (90% interval) | Acc(10%) | bias | "
             "held-out calibration MAPE | FLOPs+MAC fitted on the same rows |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        c, h, f = r["calibrated"], r["held_out_calibration"], r["flops_mac"]
        lines.append(f"| {r['minutes']:g} | {r['calibration_models']} | {r['method']} | {100 * c['mape']:.1f}% "
                     f"({100 * c['mape_90'][0]:.1f}-{100 * c['mape_90'][1]:.1f}%) | {100 * c['acc10']:.0f}% | "
                     f"{100 * c['bias']:+.1f}% | {100 * h['mape']:.1f}% (n={h['n']}) | {100 * f['mape']:.1f}% |")
    within = [r for r in rows if r["minutes"] <= 10]
    if within:
        r = within[-1]
        c = r["calibrated"]
        met = c["mape"] <= 0.08 and c["acc10"] >= 0.70
        lines += ["", f"Target (MAPE <= 8% and Acc(10%) >= 70% after <= 10 minutes of profiling): "
                  f"{'**met**' if met else '**missed**'} at {r['minutes']:g} min: MAPE {100 * c['mape']:.1f}%, "
                  f"Acc(10%) {100 * c['acc10']:.0f}%. The test models were measured in other sittings than the "
                  "calibration (the dataset's own dates), so a level drift between sittings counts against it."]
    lines += ["", "Reproduce:", "", "```bash"] + ([args.test_how] if args.test_how else []) + [
              f"narformer-tvm calibrate --threads {here.get('config', {}).get('threads')} --budget <largest>m --name "
              + args.profile,
              f"python examples/bench_calibrate.py --profile {args.profile} --test-db {args.test_db} --budgets "
              f"{args.budgets} --out {args.out.relative_to(ROOT) if args.out.is_absolute() else args.out}", "```", ""]
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps({"base": base_acc, "rows": rows}, indent=2) + "\n")
    print(f"written {args.out} ({time.strftime('%H:%M')})")


def measured_at(db: Path) -> dict[str, float]:
    """Model key -> when its main measurement was taken (seconds since the epoch)."""
    from datetime import datetime

    from narformer_tvm.data.store import Store

    with Store(db, readonly=True) as store:
        q = "SELECT d.key, MIN(m.measured_at) FROM measurements m JOIN models d ON d.id = m.model_id GROUP BY d.key"
        return {k: datetime.fromisoformat(v).timestamp() for k, v in store.db.execute(q)}


if __name__ == "__main__":
    main()
