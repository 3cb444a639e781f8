"""Few-shot transfer: how many measurements on a new configuration reach what error.

    narformer-tvm profile --zoo all --count 12 --seed 1 --threads 1 --db /tmp/threads1.db
    python examples/bench_fewshot.py --db /tmp/threads1.db --out docs/results/fewshot.md

The new configuration is measured on zoo variants the shipped predictor never saw (seed 1). Per
family the last 3 variants are the test set; the first k of a seeded shuffle of the rest train:

With ``--test-db`` the test set is that dataset's models instead (the same configuration, other
models) and every model of ``--db`` can train: e.g. the shipped predictor's own hardware measured
anew, more cleanly, on its training variants, and scored on variants it never saw.

- ``base``: the shipped predictor (`profiles/cpu-onnxruntime`) as it is (k does not matter);
- ``finetune``: the shipped predictor fine-tuned on the k samples;
- ``scaled``: the shipped predictor unchanged, times one factor (median measured/predicted on the k);
- ``scratch``: NAR-Former V2 trained from nothing on the k samples (same size as the shipped one);
- ``flops_mac``: the FLOPs + memory-access regression on the k samples.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("base", "finetune", "scaled", "scratch", "flops_mac")


def split(samples, test_per_family: int):
    by_family: dict[str, list[int]] = {}
    for i in sorted(range(len(samples)), key=lambda i: samples[i].model_id):
        by_family.setdefault(samples[i].family, []).append(i)
    test = sorted(i for idx in by_family.values() for i in idx[-test_per_family:])
    return sorted(set(range(len(samples))) - set(test)), test


def run(samples, base_path: Path, method: str, train, test, seed: int, epochs: int):
    from narformer_tvm.learn.evaluate import LinearBaseline
    from narformer_tvm.learn.splits import carve_validation
    from narformer_tvm.learn.train import (
        FitConfig,
        TrainOptions,
        predict_samples,
        recalibrate,
        train_predictor,
    )
    from narformer_tvm.model.predictor import Predictor

    tr = [samples[i] for i in train]
    te = [samples[i] for i in test]
    if method == "flops_mac":
        return LinearBaseline(("flops", "memory")).fit(tr).predict(te)
    base = Predictor.load(base_path)
    if method == "base":
        return predict_samples(base, te)[0]
    if method == "scaled":
        return predict_samples(recalibrate(base, tr), te)[0]
    fit_idx, val_idx = carve_validation(list(range(len(tr))), 0.2, seed)
    opts = TrainOptions(model={"d_model": base.config.d_model, "n_groups": base.config.n_groups,
                               "readout": base.config.readout},
                        fit=FitConfig(epochs=epochs, patience=10, lr=2e-4 if method == "finetune" else 5e-4,
                                      batch_size=16, loss="log", seed=seed))
    pred = train_predictor([tr[i] for i in fit_idx], [tr[i] for i in val_idx], opts,
                           init=base if method == "finetune" else None)
    return predict_samples(pred, te)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, required=True, help="dataset of the new configuration")
    ap.add_argument("--base", type=Path, default=ROOT / "profiles" / "cpu-onnxruntime" / "predictor.pt")
    ap.add_argument("--test-db", type=Path, default=None,
                    help="score on this dataset's models (same configuration) instead of --db's last 3 per family")
    ap.add_argument("--sizes", default="10,25,50,100")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "fewshot.md")
    args = ap.parse_args()

    from narformer_tvm.learn.metrics import summary
    from narformer_tvm.learn.samples import load_samples

    samples, cfg = load_samples(args.db)
    if args.test_db:  # appended after --db's samples: the training draws come from --db alone
        pool = list(range(len(samples)))
        samples += load_samples(args.test_db, cfg["config"]["runtime"], cfg["config"]["target"])[0]
        test = list(range(len(pool), len(samples)))
    else:
        pool, test = split(samples, 3)
    y = [samples[i].latency_ms for i in test]
    state_path = args.out.with_suffix(".json")
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    sizes = [k for k in map(int, args.sizes.split(",")) if k <= len(pool)]
    for k in sizes:
        for seed in range(args.seeds):
            train = sorted(np.random.default_rng(seed).permutation(pool)[:k].tolist())
            for method in METHODS:
                key = f"{method}/{k}/{seed}"
                if key not in state:  # finished ones are kept: a rerun resumes
                    m = summary(run(samples, args.base, method, train, test, seed, args.epochs), y)
                    state[key] = {"method": method, "k": k, "seed": seed, **m}
                    state_path.parent.mkdir(parents=True, exist_ok=True)
                    state_path.write_text(json.dumps(state, indent=2) + "\n")
                print(key, f"MAPE {100 * state[key]['mape']:.1f}%", flush=True)

    lines = ["# Few-shot transfer to a new configuration", "",
             f"Base predictor: `{args.base.relative_to(ROOT) if args.base.is_relative_to(ROOT) else args.base}`. "
             f"New configuration: `{json.dumps(cfg['config'])}` on "
             f"`{cfg['fingerprint'].get('cpu_id', cfg['fingerprint'].get('cpu'))}`, {len(pool)} models of `{args.db}`; "
             + (f"test: the {len(test)} models of `{args.test_db}`; training: k of the {len(pool)}. " if args.test_db else
                f"test: the last 3 of each family ({len(test)} models); training: k of the other {len(pool)}. ")
             + f"MAPE on the test models, mean over {args.seeds} seeds (Kendall tau in brackets).", "",
             "| k | " + " | ".join(METHODS) + " |", "| --- |" + " --- |" * len(METHODS)]
    for k in sizes:
        cells = []
        for method in METHODS:
            rows = [v for v in state.values() if v["method"] == method and v["k"] == k and v["seed"] < args.seeds]
            cells.append(f"{100 * np.mean([r['mape'] for r in rows]):.1f}% "
                         f"({np.mean([r['kendall_tau'] for r in rows]):.3f})")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "Reproduce:", "", "```bash", f"python examples/bench_fewshot.py --db {args.db} --base {args.base} "
              + (f"--test-db {args.test_db} " if args.test_db else "")
              + f"--sizes {args.sizes} --seeds {args.seeds} --epochs {args.epochs} --out {args.out}", "```", ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
