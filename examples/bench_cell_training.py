"""How long NB201 cell training takes (issue #7's target: 781 cells in under 30 min on 2 cores).

    python examples/bench_cell_training.py --data ../shared/data/nasbench201_accuracy.csv \
        --out docs/results/cell-training-speed.md

Trains the cell predictor at its defaults (width 512, 6 blocks, batch 32, relabelled copy per batch)
on the protocol's 781 training cells of seed 0 for a few epochs per variant, in one process, and
times every epoch (validation on the 200 next cells included):

- ``torch dropout, fp32``: the training as it was before (torch's CPU dropout, per-tensor AdamW);
- ``fp32``: NumPy-drawn dropout masks (``model.Dropout``);
- ``bf16``: the same under bf16 autocast (the default where the CPU has native bf16);
- ``bf16, fused AdamW``: the same with AdamW's fused step (``train.optimizer``): the default.

Per variant: median seconds per epoch and range, the projection to the default 300 epochs, and the
speed-up over the first variant (ratios in one run: this machine's timing drifts between runs).
Run on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

# (name, precision, torch's dropout, fused AdamW): each row adds one change to the one before
VARIANTS = (("torch dropout, fp32", "fp32", True, False), ("fp32", "fp32", False, False), ("bf16", "bf16", False, False),
            ("bf16, fused AdamW", "bf16", False, True))


def epoch_times(data, precision: str, torch_dropout: bool, fused: bool, epochs: int) -> list[float]:
    import torch

    from narformer_tvm.learn.nas import AccuracyOptions, protocol_split, train_accuracy
    from narformer_tvm.model import narformer as model_module

    tr, va = protocol_split(len(data.cells), 781, 200, 0)
    stamps = [time.perf_counter()]
    saved, adamw = model_module.Dropout, torch.optim.AdamW
    if torch_dropout:
        model_module.Dropout = torch.nn.Dropout
    if not fused:
        torch.optim.AdamW = lambda *a, **kw: adamw(*a, **{**kw, "fused": False})
    try:
        train_accuracy([data.cells[i] for i in tr], data.accuracy[tr], [data.cells[i] for i in va], data.accuracy[va],
                       AccuracyOptions(epochs=epochs, precision=precision), lambda _: stamps.append(time.perf_counter()))
    finally:
        model_module.Dropout, torch.optim.AdamW = saved, adamw
    return [b - a for a, b in zip(stamps[1:], stamps[2:])]  # the first epoch also builds the model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="../shared/data/nasbench201_accuracy.csv")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="Markdown file; a .json beside it keeps the raw times")
    args = ap.parse_args()

    import torch

    from narformer_tvm.graph.cells import load_nb201
    from narformer_tvm.learn.nas import cpu_has_bf16

    torch.set_num_threads(args.threads)
    data = load_nb201(args.data)
    rows = []
    for name, precision, torch_dropout, fused in VARIANTS:
        times = epoch_times(data, precision, torch_dropout, fused, args.epochs)
        rows.append({"variant": name, "epoch_s": times, "median_s": statistics.median(times)})
        print(f"{name}: median {rows[-1]['median_s']:.2f} s per epoch", flush=True)
    base = rows[0]["median_s"]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = ["# Cell predictor training speed (NAS-Bench-201, 781 cells)", "",
             f"Measured {stamp} with `python examples/bench_cell_training.py --data ... --epochs {args.epochs}` "
             f"({args.threads} torch threads, {platform.processor() or platform.machine()}, native bf16: "
             f"{cpu_has_bf16()}); {args.epochs} epochs per variant, the first left out.", "",
             "| variant | s per epoch (median) | range | 300 epochs | speed-up |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['median_s']:.2f} | {min(r['epoch_s']):.2f}-{max(r['epoch_s']):.2f} | "
                     f"{300 * r['median_s'] / 60:.1f} min | {base / r['median_s']:.2f}x |")
    out = Path(args.out)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"measured": stamp, "threads": args.threads, "rows": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
