"""A predictor's error per measuring sitting of a dataset, beside each sitting's probe level.

    python examples/bench_sittings.py profiles/cpu-onnxruntime-zen5/train \
        --predictor cpu-onnxruntime-zen5 --out docs/results/sittings-zen5.md

Sittings are those of `narformer-tvm dataset sittings` (runs without a 20-minute pause), in every pass
(main, repeat, repeat2, ...), and each row is scored against its own label (divided by its regime factor
or sitting factor, as the predictor learned), not the mean over passes: a model measured in several
sittings shows what each sitting's level does to the error. If the machine's level moved between
sittings by more than the regime correction takes out, the median signed error moves with it. The
held-out columns are the rows of models `train` holds out (each family's last 10%).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db")
    ap.add_argument("--predictor", required=True, help="a profile name or predictor file")
    ap.add_argument("--out", required=True, help="Markdown file; a .json beside it keeps the numbers")
    args = ap.parse_args()

    from narformer_tvm.data.labels import label_options, sittings
    from narformer_tvm.data.store import Store
    from narformer_tvm.learn.samples import load_samples
    from narformer_tvm.learn.splits import split_same_distribution
    from narformer_tvm.learn.train import predict_samples
    from narformer_tvm.model.predictor import Predictor
    from narformer_tvm.profiles import resolve_predictor

    pred = Predictor.load(resolve_predictor(args.predictor))
    corrected = label_options(pred.profile)["regime_correct"]
    factor = "sitting_factor" if corrected == "sitting" else "regime_factor"
    samples, cfg = load_samples(args.db, regime_correct=corrected)
    predicted = dict(zip((s.key for s in samples), predict_samples(pred, samples)[0]))
    held_out = {samples[i].key for i in split_same_distribution(samples)[1]}
    result = []
    with Store(args.db, readonly=True) as store:
        for pass_ in store.pass_names(cfg["id"]):
            rows = [r for r in store.rows(cfg["id"], pass_) if not r["noisy"] and r["key"] in predicted]
            for sit in (s for s in sittings(store, pass_) if s["config_id"] == cfg["id"]):
                chosen = [r for r in rows if sit["start"] <= r["measured_at"] <= sit["end"]]
                if not chosen:
                    continue
                label = np.array([r["latency_ms"] / (r[factor] if corrected else 1.0) for r in chosen])
                err = np.array([predicted[r["key"]] for r in chosen]) / label - 1
                test = np.array([r["key"] in held_out for r in chosen])
                entry = {"pass": pass_, "start": sit["start"], "end": sit["end"], "n": len(chosen),
                         "probe_vs_typical": sit["probe_vs_typical"], "median_signed_error": float(np.median(err)),
                         "mape": float(np.mean(np.abs(err))), "acc10": float(np.mean(np.abs(err) < 0.1)),
                         "held_out": int(test.sum())}
                if test.any():
                    entry.update(held_out_median_signed_error=float(np.median(err[test])),
                                 held_out_mape=float(np.mean(np.abs(err[test]))),
                                 held_out_acc10=float(np.mean(np.abs(err[test]) < 0.1)))
                result.append(entry)

    def pct(x, signed=False):
        return "-" if x is None else f"{100 * x:+.2f}%" if signed else f"{100 * x:.2f}%"

    lines = ["# Error per measuring sitting", "",
             f"`python examples/bench_sittings.py {args.db} --predictor {args.predictor} --out ...`", "",
             f"Each row against its own label ({cfg['labels'].split(',')[0]}); held out: the models "
             "`train` holds out (each family's last 10%).", "",
             "| pass | sitting (UTC) | rows | probes vs typical | median signed error | MAPE | Acc(10%) "
             "| held out | their median signed error | their MAPE | their Acc(10%) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result:
        lines.append(f"| {r['pass']} | {r['start'][:16]} - {r['end'][11:16]} | {r['n']} | "
                     f"{pct(r['probe_vs_typical'], True)} | {pct(r['median_signed_error'], True)} | {pct(r['mape'])} | "
                     f"{100 * r['acc10']:.1f}% | {r['held_out']} | {pct(r.get('held_out_median_signed_error'), True)} | "
                     f"{pct(r.get('held_out_mape'))} | "
                     f"{'-' if not r['held_out'] else format(100 * r['held_out_acc10'], '.1f') + '%'} |")
    out = Path(args.out)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
