"""Did the machine's speed move while a calibration was measured? Measured latency over the unadapted base
predictor's, by window of profiling time (calibration rows) and by pass (the test networks, the same
models in every pass); where the rows carry regime probes, the probe's level beside.

    python examples/bench_drift.py --calibration CALIBRATION_DB --test-db DATASET --passes main,repeat,repeat2 \
        --out docs/results/calibrate-intel-drift.md
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

WINDOWS = ((0, 2), (2, 5), (5, 7.5), (7.5, 10), (10, 30))  # minutes of profiling


def probe_levels(db: Path, cal: list) -> np.ndarray:
    """The quicker regime probe of each calibration row (NaN where the row has none)."""
    from narformer_tvm.data.store import Store

    with Store(db, readonly=True) as store:
        probe = {r["key"]: min(r["info"].get("probe_ms") or [np.nan]) for r in store.rows()}
    return np.array([probe.get(s.key, np.nan) for s in cal], dtype=float)


def main() -> None:
    from bench_calibrate import profiling_clock

    from narformer_tvm.calibrate import base_view
    from narformer_tvm.learn.samples import load_samples
    from narformer_tvm.model.load import load_predictor
    from narformer_tvm.profiles import resolve_predictor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calibration", action="append", required=True,
                    help="a calibration dataset (a user profile's calibration.db, or its rows exported; repeatable)")
    ap.add_argument("--base", default="cpu-onnxruntime")
    ap.add_argument("--test-db", action="append", default=[], help="test networks measured in several passes (repeatable)")
    ap.add_argument("--passes", default="main,repeat,repeat2")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    base = load_predictor(resolve_predictor(args.base))
    lines = ["# Did the machine drift during calibration?", "",
             f"Measured latency over the unadapted `{args.base}` predictor's (median), by window of profiling time "
             "for the calibration rows; the regime probe's median level relative to the sitting's where the rows "
             "carry probes (2-thread calibrations). The calibration set's models differ between windows, so a "
             "step there may be the models; the test networks are the same in every pass.", "",
             "| calibration | window (min) | rows | measured / base | probe / sitting median |",
             "| --- | --- | --- | --- | --- |"]
    for db in args.calibration:
        cal, _ = load_samples(db, include_noisy=True)
        ratio = np.array([s.latency_ms for s in cal]) / base_view(base, cal)[0]
        at = profiling_clock(db)
        clock = np.array([at[s.key] for s in cal]) / 60
        probe = probe_levels(db, cal)
        for lo, hi in WINDOWS:
            w = (clock >= lo) & (clock < hi)
            if not w.any():
                continue
            p = probe[w][np.isfinite(probe[w])]
            level = f"{np.median(p) / np.nanmedian(probe):.3f}" if len(p) else "no probes"
            lines.append(f"| {db} | {lo:g}-{hi:g} | {int(w.sum())} | {np.median(ratio[w]):.3f} | {level} |")
        print(lines[-1], flush=True)
    if args.test_db:
        lines += ["", "Test networks, the same models in each pass:", "",
                  "| test dataset | pass | models | measured / base | / the pass before, per network: median (quartiles) "
                  "| first measured (UTC) |", "| --- | --- | --- | --- | --- | --- |"]
    for db in args.test_db:
        before = {}
        for pass_ in args.passes.split(","):
            test, _ = load_samples(db, pass_=pass_)
            ratio = np.array([s.latency_ms for s in test]) / base_view(base, test)[0]
            now = {s.name: s.latency_ms for s in test}
            step = np.array([now[n] / before[n] for n in now if n in before])
            moved = (f"{np.median(step):.3f} ({np.percentile(step, 25):.3f}-{np.percentile(step, 75):.3f}), "
                     f"{len(step)} networks" if len(step) else "")
            lines.append(f"| {db} | {pass_} | {len(test)} | {np.median(ratio):.3f} | {moved} | {first_measured(db, pass_)} |")
            print(lines[-1], flush=True)
            before = now
    lines += ["", "Reproduce:", "", "```bash", "python examples/bench_drift.py "
              + " ".join(f"--calibration {p}" for p in args.calibration)
              + "".join(f" --test-db {db}" for db in args.test_db)
              + (f" --passes {args.passes}" if args.test_db else "") + f" --out {args.out}",
              "```", ""]
    args.out.write_text("\n".join(lines))


def first_measured(db, pass_: str) -> str:
    from narformer_tvm.data.store import Store

    with Store(db, readonly=True) as store:
        return store.db.execute("SELECT MIN(measured_at) FROM measurements WHERE pass = ?", (pass_,)).fetchone()[0]


if __name__ == "__main__":
    main()
