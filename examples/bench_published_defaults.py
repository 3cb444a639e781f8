"""A shipped predictor on the published default configurations of many model types, measured on the
profile's own hardware: the networks users actually bring (ResNet-50, BERT-base, GPT-2, ViT-B/16, ...).

    python examples/export_networks.py $(python examples/export_networks.py --list) --out nets/zoo
    narformer-tvm zoo --family corpus --count 1 --standard --out nets/corpus && rm nets/corpus/*-s0-*
    narformer-tvm profile nets/zoo/*.onnx nets/corpus/*.onnx --db DATASET --repeat-pass 1.0
    python examples/bench_published_defaults.py --db DATASET --predictor cpu-onnxruntime --out RESULTS.md

Scored raw (no level taken out: on the profile's own CPU type the level is part of what the predictor
must get right), against the labels' noise floor from the repeat pass. Models graph-identical to the
predictor's training data are left out; rows flagged noisy too, as training leaves them out.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from narformer_tvm.data.labels import (LABEL_STATISTIC, REGIME_CORRECTED, SITTING_CORRECTED, labels_corrected,
                                       noise_floors)
from narformer_tvm.data.store import Store
from narformer_tvm.learn.metrics import summary
from narformer_tvm.learn.evaluate import predictions_on_unseen
from narformer_tvm.learn.samples import dataset_path
from narformer_tvm.measure import families, hf_models, zoo

SAME_TYPE = {"hf_vit": "vit"}  # the torch and transformers implementations of one architecture


def model_type(name: str) -> tuple[str, str] | None:
    """(model type, 'text' | 'vision') of a published network's name, or None for other models."""
    if name in families.STANDARD:
        return families.STANDARD[name][0], "vision"
    corpus = zoo.standard_names(zoo.CORPUS)
    if name in corpus:
        family = corpus[name].family
        return SAME_TYPE.get(family, family), hf_models.MODEL_TYPES[zoo.CORPUS[family].builder[3:]].kind
    return None


def noise_floor(db: str, config: dict) -> float | None:
    with Store(dataset_path(db) or db, readonly=True) as store:
        noise = noise_floors(store, config["id"]).get("repeat", {})
    correction = labels_corrected(config)
    statistic = SITTING_CORRECTED if correction == "sitting" else REGIME_CORRECTED if correction else LABEL_STATISTIC
    return noise.get(statistic, {}).get("mape")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--predictor", default="cpu-onnxruntime", help="a profile name or a predictor file")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    profile, samples, pred, cfg, left_out = predictions_on_unseen(args.db, args.predictor)
    scored = [(s, p, *model_type(s.name)) for s, p in zip(samples, pred) if model_type(s.name)]
    floor = noise_floor(args.db, cfg)

    def row(title, items):
        if not items:
            return f"| {title} | 0 | 0 | | | | |"
        y, p = [s.latency_ms for s, *_ in items], [q for _, q, *_ in items]
        m = summary(p, y)
        bias = statistics.median(q / t - 1 for q, t in zip(p, y))
        return (f"| {title} | {m['n']} | {len({t for *_, t, _ in items})} | {100 * m['mape']:.2f}% | "
                f"{100 * m['acc10']:.0f}% | {100 * bias:+.1f}% | {m['kendall_tau']:.3f} |")

    fp = cfg.get("fingerprint", {})
    same_cpu = fp.get("cpu_id") == profile.get("fingerprint", {}).get("cpu_id")
    lines = ["# Published default configurations on the profile's hardware", "",
             f"`python examples/bench_published_defaults.py --db {args.db} --predictor {args.predictor} --out {args.out}`",
             "", f"Predictor `{args.predictor}` ({profile.get('labels')} labels), measured on `{fp.get('cpu_id')}` "
             f"(flags `{fp.get('cpu_flags')}`; {'the' if same_cpu else 'NOT the'} profile's CPU type), ONNX Runtime "
             f"{fp.get('onnxruntime')}, {cfg['config'].get('threads')} threads. {left_out} models graph-identical to "
             f"training data left out; rows flagged noisy left out. Labels' noise floor (main against repeat pass): "
             + (f"{100 * floor:.2f}%." if floor is not None else "not measured."),
             "", "| published networks | models | model types | MAPE | Acc(10%) | median bias (pred/measured - 1) "
             "| Kendall tau |", "| --- | --- | --- | --- | --- | --- | --- |",
             row("all", scored), row("vision", [x for x in scored if x[3] == "vision"]),
             row("text", [x for x in scored if x[3] == "text"]), "",
             "| model | type | measured ms | predicted ms | error |", "| --- | --- | --- | --- | --- |"]
    for s, p, kind, modality in sorted(scored, key=lambda x: (x[3], x[2], x[0].name)):
        lines.append(f"| {s.name} | {kind} ({modality}) | {s.latency_ms:.3f} | {p:.3f} | {100 * (p / s.latency_ms - 1):+.1f}% |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
