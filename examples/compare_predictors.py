"""Choose which predictor ships: several predictors scored on the validation part `train` carves from a
dataset (same split and seed), per group of families (the zoo's, the real-architecture corpus');
with --test, then the held-out test split, once the choice is made.

    python examples/compare_predictors.py --db profiles/cpu-onnxruntime/train cpu-onnxruntime new.pt
    python examples/compare_predictors.py --db profiles/cpu-onnxruntime/train cpu-onnxruntime new.pt --test
    python examples/compare_predictors.py --db profiles/cpu-onnxruntime-zen5/seed1 --whole cpu-onnxruntime-zen5 new.pt

--whole scores every model of --db: a dataset that no compared predictor trained on (e.g. `seed1/`).

A predictor that trained on some validation models (e.g. the shipped one, trained before the dataset
grew) is favoured there: the comparison is conservative for a new candidate.
"""
from __future__ import annotations

import argparse

from narformer_tvm.data.labels import label_options
from narformer_tvm.learn.metrics import summary
from narformer_tvm.learn.samples import dataset_path, load_samples, unseen_in_training
from narformer_tvm.learn.splits import carve_validation, split_same_distribution
from narformer_tvm.learn.train import predict_samples
from narformer_tvm.measure import zoo
from narformer_tvm.model.load import load_predictor
from narformer_tvm.profiles import resolve_predictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("predictors", nargs="+", help="profile names or predictor files; the first sets the labels")
    ap.add_argument("--seed", type=int, default=0, help="train's --seed (it sets the validation carve)")
    ap.add_argument("--test", action="store_true", help="score the test split (after choosing on validation)")
    ap.add_argument("--whole", action="store_true", help="score every model of --db (no split)")
    args = ap.parse_args()

    loaded = [load_predictor(resolve_predictor(p)) for p in args.predictors]
    samples, _ = load_samples(args.db, **label_options(loaded[0].profile))
    if args.whole:  # less any model graph-identical to one of a compared predictor's training dataset
        part = samples
        for dataset in {str(dataset_path(d)) for p in loaded if (d := p.profile.get("dataset")) and dataset_path(d)}:
            part, _ = unseen_in_training(part, {"dataset": dataset})  # each dataset read once
        what = f"every model ({len(samples) - len(part)} dropped: graphs in a training dataset)"
    else:
        train_idx, test_idx = split_same_distribution(samples)
        _, val_idx = carve_validation(train_idx, 0.1, args.seed)
        part = [samples[i] for i in (test_idx if args.test else val_idx)]
        what = f"{'test' if args.test else 'validation'} split"
    groups = {"all": part, "zoo families": [s for s in part if s.family not in zoo.CORPUS],
              "corpus families": [s for s in part if s.family in zoo.CORPUS]}
    print(f"{what} of {args.db}: "
          + ", ".join(f"{name} {len(g)}" for name, g in groups.items()))
    print("| predictor | " + " | ".join(f"{g} MAPE | Acc(10%)" for g in groups) + " |")
    print("| --- |" + " --- | --- |" * len(groups))
    for name, predictor in zip(args.predictors, loaded):
        cells = []
        for g in groups.values():
            if not g:
                cells += ["", ""]
                continue
            m = summary([float(p) for p in predict_samples(predictor, g)[0]], [s.latency_ms for s in g])
            cells += [f"{100 * m['mape']:.2f}%", f"{100 * m['acc10']:.0f}%"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
