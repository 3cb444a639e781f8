"""How fast the shipped predictor answers: one `estimate` CLI call, and batch prediction in-process.

    python examples/bench_speed.py --out docs/results/speed.md

- CLI: `narformer-tvm estimate` on the example model and on DenseNet-121 (from our torch code, weights
  included), process start to exit, 1 warm-up + 7 timed calls: median and range.
- Batch: the shipped predictor `estimate` picks on this machine on graphs of its profile's dataset, as stored (GraphTable), timed
  with token encoding included and excluded, and on ONNX files (graph extraction included).
Run on an otherwise idle machine; the numbers are this machine's.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "speed.md")
    ap.add_argument("--graphs", type=int, default=1000, help="dataset graphs for the batch benchmark")
    args = ap.parse_args()

    from narformer_tvm.graph.onnx_graph import build_graph
    from narformer_tvm.graph.tokens import encode_table
    from narformer_tvm.learn.samples import load_samples
    from narformer_tvm.measure import families
    from narformer_tvm.model.load import load_predictor
    from narformer_tvm.profiles import default_profile, list_profiles, resolve_predictor

    tmp = Path(tempfile.mkdtemp())
    model = tmp / "densenet121.onnx"
    net, res = families.build_standard("densenet121")
    families.export_onnx(net, model, res)
    layers = len(build_graph(model).nodes)
    exe = shutil.which("narformer-tvm")
    cli = timed(lambda: subprocess.run([exe, "estimate", str(model)], check=True, capture_output=True), 7)
    example = ROOT / "examples" / "squeezenet1_1.onnx"
    cli_small = timed(lambda: subprocess.run([exe, "estimate", str(example)], check=True, capture_output=True), 7)

    name = default_profile()  # the profile `estimate` uses on this machine, as the CLI timing above
    folder = list_profiles()[name]
    pred = load_predictor(resolve_predictor(name))  # the ONNX export estimate runs
    samples = load_samples(folder / "train")[0][:args.graphs]
    tables = [s.table for s in samples]
    encoded = [encode_table(t, pred.features) for t in tables]
    predict_only = timed(lambda: pred.predict_encoded(encoded), 3)
    with_encoding = timed(lambda: pred.predict_encoded([encode_table(t, pred.features) for t in tables]), 3)
    onnx_files = [tmp / f"{n}.onnx" for n in ("resnet50", "mobilenet_v2", "vit_b_16", "efficientnet_b0")]
    for f in onnx_files:
        net, res = families.build_standard(f.stem)
        families.export_onnx(net, f, res, export_params=False)
    from_onnx = timed(lambda: pred.predict(
        [build_graph(f) for f in onnx_files]), 3)
    shutil.rmtree(tmp, ignore_errors=True)

    n = len(samples)
    rows = {
        "cli_estimate_s": {"model": f"DenseNet-121 ({layers} operators)", "median": statistics.median(cli),
                           "min": min(cli), "max": max(cli), "calls": len(cli)},
        "batch_graphs_per_s": {"graphs": n, "mean_nodes": statistics.mean(len(t.ops) for t in tables),
                               "predict_only": n / statistics.median(predict_only),
                               "with_token_encoding": n / statistics.median(with_encoding)},
        "onnx_to_prediction_s_per_model": statistics.median(from_onnx) / len(onnx_files),
        "cli_estimate_example_s": {"model": "examples/squeezenet1_1.onnx", "median": statistics.median(cli_small),
                                   "min": min(cli_small), "max": max(cli_small), "calls": len(cli_small)},
        "machine": {"cpu": platform.processor() or platform.machine()},
        "profile": {"name": name, "predictor": str(resolve_predictor(name).name)},
    }
    b = rows["batch_graphs_per_s"]
    lines = ["# Prediction speed of the shipped predictor", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on this project's 2-core machine, "
             f"nothing else running; the predictor `estimate` uses here: profile `{name}`, "
             f"`{rows['profile']['predictor']}` on ONNX Runtime (no torch).", "",
             "| what | result | target |", "| --- | --- | --- |",
             f"| `narformer-tvm estimate examples/squeezenet1_1.onnx`, process start to exit | "
             f"median {statistics.median(cli_small):.2f} s (range {min(cli_small):.2f}-{max(cli_small):.2f}, "
             f"{len(cli_small)} calls) | < 1 s |",
             f"| `narformer-tvm estimate` on {rows['cli_estimate_s']['model']}, process start to exit | "
             f"median {rows['cli_estimate_s']['median']:.2f} s (range {min(cli):.2f}-{max(cli):.2f}, {len(cli)} calls) "
             "| < 1 s |",
             f"| batch prediction, {n} dataset graphs (mean {b['mean_nodes']:.0f} operators), encoded | "
             f"{b['predict_only']:.0f} graphs/s | >= 200 graphs/s |",
             f"| the same including token encoding | {b['with_token_encoding']:.0f} graphs/s | |",
             f"| ONNX file to prediction (ResNet-50, MobileNetV2, ViT-B/16, EfficientNet-B0) | "
             f"{1000 * rows['onnx_to_prediction_s_per_model']:.0f} ms per model | |",
             "", "Reproduce: `python examples/bench_speed.py --out docs/results/speed.md`", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
