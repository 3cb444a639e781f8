"""A predictor's error per measuring sitting of a dataset, beside each sitting's probe level.

    python examples/bench_sittings.py profiles/cpu-onnxruntime-zen5/dataset.db \
        --predictor cpu-onnxruntime-zen5 --out docs/results/sittings-zen5.md

A sitting is the UTC hour a main-pass row was measured in (sweeps ran as blocks of an hour or more).
If the machine's fast level moved between sittings by more than the regime correction takes out, the
predictor's median signed error moves with the sitting's probe level: the rows of a sitting it was not
trained on are predicted high when the probes ran quick. Labels are those the predictor learned.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db")
    ap.add_argument("--predictor", required=True, help="a profile name or predictor file")
    ap.add_argument("--out", required=True, help="Markdown file; a .json beside it keeps the numbers")
    args = ap.parse_args()

    from narformer_tvm.estimate import label_options, resolve_predictor
    from narformer_tvm.predictor import Predictor
    from narformer_tvm.train import load_samples, predict_samples

    pred = Predictor.load(resolve_predictor(args.predictor))
    samples, _ = load_samples(args.db, **label_options(pred.profile))
    with sqlite3.connect(f"file:{args.db}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT model_id, measured_at, info FROM measurements WHERE pass='main'").fetchall()
    hour = {mid: at[:13] for mid, at, _ in rows}
    probe = {mid: min(p) for mid, _, info in rows if info and (p := json.loads(info).get("probe_ms"))}
    err = predict_samples(pred, samples)[0] / np.array([s.latency_ms for s in samples]) - 1
    sitting = np.array([hour[s.model_id] for s in samples])
    result = {}
    for h in sorted(set(sitting)):
        at = np.flatnonzero(sitting == h)
        probes = [probe[samples[i].model_id] for i in at if samples[i].model_id in probe]
        result[h] = {"n": len(at), "probe_ms": float(np.median(probes)) if probes else None,
                     "median_signed_error": float(np.median(err[at])), "mape": float(np.mean(np.abs(err[at]))),
                     "acc10": float(np.mean(np.abs(err[at]) < 0.1))}
    lines = ["# Error per measuring sitting", "",
             f"`python examples/bench_sittings.py {args.db} --predictor {args.predictor} --out ...`", "",
             "| sitting (UTC hour) | rows | median quicker probe | median signed error | MAPE | Acc(10%) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for h, r in result.items():
        probe_ms = f"{r['probe_ms']:.4f} ms" if r["probe_ms"] else "-"
        lines.append(f"| {h} | {r['n']} | {probe_ms} | {100 * r['median_signed_error']:+.2f}% | "
                     f"{100 * r['mape']:.2f}% | {100 * r['acc10']:.1f}% |")
    out = Path(args.out)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
