"""Benchmark NAR-Former V2 as a MetaSchedule cost model against XGBoost and random search.

    python examples/bench_costmodel.py run --work /tmp/bench-cm --trials 128 --seeds 0
    python examples/bench_costmodel.py report --work /tmp/bench-cm --out docs/results/costmodel.md

Tasks are layers of real networks (ResNet-50 convolutions, a MobileNetV2 depthwise convolution, the
classifier's dense layer, a ViT-B/16 MLP matmul), written as TE workloads. Methods, each tuned with
the same trial budget and seed on the same target:

- ``xgb``, ``random``: MetaSchedule's built-in cost models (``xgb`` scores candidates at random until
  it holds 100 measurements, so within 128 trials it is close to random search);
- ``xgb-warm16``: the same XGBoost model used from the 17th measurement on, as narformer is;
- ``narformer``: NAR-Former V2 from scratch (learns online);
- ``narformer-pre``: pre-trained offline on the ``xgb`` records of the *other* tasks (leave one task
  out), then fine-tuned online;
- ``predict-only``: the pre-trained model explores by prediction alone, then the best 8 schedules are
  built and run.

Every run is resumable (one MetaSchedule work dir per task/method/seed; finished ones are kept).
``report`` reads the tuning records in commit order: best latency within the first 32/64/128 trials,
the trials each method needs to reach xgb's final latency, wall time and the cost model's share.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

TASKS = {  # name -> (kind, shape parameters)
    "resnet50_conv3x3_56": ("conv2d", dict(n=1, c=64, h=56, w=56, k=64, r=3, s=1)),
    "resnet50_conv1x1_28": ("conv2d", dict(n=1, c=512, h=28, w=28, k=128, r=1, s=1)),
    "resnet50_conv3x3_14_s2": ("conv2d", dict(n=1, c=256, h=28, w=28, k=256, r=3, s=2)),
    "mobilenetv2_depthwise_56": ("depthwise", dict(n=1, c=144, h=56, w=56, r=3, s=1)),
    "resnet50_dense_1000": ("dense", dict(m=1, k=2048, n=1000)),
    "vit_b16_mlp_matmul": ("dense", dict(m=197, k=768, n=3072)),
}
METHODS = ("xgb", "xgb-warm16", "random", "narformer", "narformer-pre", "predict-only")
BUDGETS = (32, 64, 128)


def workload(name: str):
    from tvm import te, topi

    kind, p = TASKS[name]
    if kind == "conv2d":
        x = te.placeholder((p["n"], p["c"], p["h"], p["w"]), name="x")
        w = te.placeholder((p["k"], p["c"], p["r"], p["r"]), name="w")
        y = topi.nn.conv2d_nchw(x, w, p["s"], p["r"] // 2, 1)
        return te.create_prim_func([x, w, y])
    if kind == "depthwise":
        x = te.placeholder((p["n"], p["c"], p["h"], p["w"]), name="x")
        w = te.placeholder((p["c"], 1, p["r"], p["r"]), name="w")
        y = topi.nn.depthwise_conv2d_nchw(x, w, p["s"], p["r"] // 2, 1)
        return te.create_prim_func([x, w, y])
    a = te.placeholder((p["m"], p["k"]), name="a")
    b = te.placeholder((p["n"], p["k"]), name="b")
    return te.create_prim_func([a, b, topi.nn.dense(a, b)])


def run_one(work: Path, task: str, method: str, trials: int, seed: int, cores: int) -> dict:

    from narformer_tvm.integrations.tvm_cost_model import NARFormerCostModel
    from narformer_tvm.integrations.tvm_env import (
        fast_builder,
        host_target,
        meta_schedule,
    )
    from narformer_tvm.integrations.tvm_records import measure_top, predict_only

    ms = meta_schedule()
    out = work / task / f"{method}-s{seed}"
    done = out / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    target = host_target(cores)
    builder, runner, database = fast_builder(), "local", "json"
    if method in ("xgb", "random"):
        cm = method
    elif method == "xgb-warm16":  # xgb's model from the 17th sample on, as narformer (its default waits for 100)
        cm = timed_xgb(ms, num_warmup_samples=16)
    else:
        cm = NARFormerCostModel(seed=seed)
        if method in ("narformer-pre", "predict-only"):
            others = [str(p) for t in TASKS if t != task for p in [work / t / f"xgb-s{seed}"]
                      if (p / "database_tuning_record.json").exists()]
            if not others:
                raise SystemExit(f"{task}/{method}: run xgb on the other tasks first")
            cm.pretrain(others, steps=300)
        if method == "predict-only":
            builder, runner = predict_only(cm)
            database = ms.database.MemoryDatabase()
    t0 = time.time()
    db = ms.tune_tir(workload(task), target, str(out), trials, num_trials_per_iter=32, builder=builder,
                     runner=runner, database=database, cost_model=cm, seed=seed)
    seconds = time.time() - t0
    measured = None
    if method == "predict-only":
        real = ms.database.JSONDatabase(str(out / "database_workload.json"), str(out / "database_tuning_record.json"))
        t1 = time.time()
        measured = measure_top(db, real, target, 8)
        seconds += time.time() - t1
    result = {"task": task, "method": method, "seed": seed, "trials": trials, "seconds": seconds,
              "cost_model_seconds": dict(getattr(cm, "seconds", {}) or {}), "measured": measured}
    done.write_text(json.dumps(result, indent=2))
    return result


def timed_xgb(ms, **kw):
    """MetaSchedule's XGBModel with its predict/update time recorded in ``.seconds`` (as narformer's)."""
    cls = ms.cost_model.XGBModel._cls  # the Python class behind the FFI wrapper
    seconds = {"predict": 0.0, "update": 0.0}
    for name in seconds:
        if not hasattr(getattr(cls, name), "__wrapped__"):
            def wrapper(self, *a, _f=getattr(cls, name), _n=name, **k):
                t0 = time.perf_counter()
                try:
                    return _f(self, *a, **k)
                finally:
                    self._seconds[_n] += time.perf_counter() - t0
            wrapper.__wrapped__ = getattr(cls, name)
            setattr(cls, name, wrapper)
    cm = ms.cost_model.XGBModel(**kw)
    cm._inst._seconds = cm.seconds = seconds
    return cm


def curve(run_dir: Path) -> list[float]:
    """Running best latency (s) after each measured record, in commit order."""
    best, out = float("inf"), []
    path = run_dir / "database_tuning_record.json"
    for line in path.read_text().splitlines() if path.exists() else []:
        runs = json.loads(line)[1][1]  # [workload index, [trace, run_secs, target, args_info]]
        if runs:  # None: the build or run failed
            best = min(best, statistics.median(float(x) for x in runs))
        out.append(best)
    return out


def report(work: Path, out: Path, seeds: list[int]) -> None:
    lines = ["# NAR-Former V2 as a MetaSchedule cost model vs xgb and random", "",
             "Best latency found (us) within the first 32 / 64 / 128 measured trials; `to xgb@128`: trials "
             "needed to reach xgb's 128-trial latency; `cm share`: update+predict time / tuning wall time.", "",
             "| task | method | best@32 | best@64 | best@128 | ratio to xgb@128 | to xgb@128 | wall s | cm share |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows = []
    for task in TASKS:
        for seed in seeds:
            ref_curve = curve(work / task / f"xgb-s{seed}")
            ref = ref_curve[-1] if ref_curve else None
            for method in METHODS:
                d = work / task / f"{method}-s{seed}"
                if not (d / "result.json").exists():
                    continue
                res = json.loads((d / "result.json").read_text())
                c = curve(d)
                at = [c[min(b, len(c)) - 1] * 1e6 if c else None for b in BUDGETS]
                reach = next((i + 1 for i, v in enumerate(c) if ref and v <= ref * 1.0001), None)
                share = sum(res["cost_model_seconds"].values()) / res["seconds"] if res["cost_model_seconds"] else None
                rows.append({**res, "best_us": at, "reach_xgb": reach, "share": share})
                fmt = lambda v: f"{v:.1f}" if v else "-"  # noqa: E731
                lines.append(f"| {task} | {method} | {fmt(at[0])} | {fmt(at[1])} | {fmt(at[2])} | "
                             f"{at[2] / (ref * 1e6):.2f} | {reach or '-'} | {res['seconds']:.0f} | "
                             f"{f'{100 * share:.0f}%' if share is not None else '-'} |" if ref and at[2] else
                             f"| {task} | {method} | - | - | - | - | - | {res['seconds']:.0f} | - |")
    lines += ["", "Reproduce:", "", "```bash", f"python examples/bench_costmodel.py run --work {work}",
              f"python examples/bench_costmodel.py report --work {work} --out {out}", "```", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=["run", "report"])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--trials", type=int, default=128)
    ap.add_argument("--seeds", default="0", help="comma-separated")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs/results/costmodel.md"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.phase == "report":
        return report(args.work, args.out, seeds)
    methods = [m for m in METHODS if m in args.methods.split(",")]  # xgb first: pre-training reads its records
    for seed in seeds:
        for method in methods:
            for task in args.tasks.split(","):
                r = run_one(args.work, task, method, args.trials, seed, args.cores)
                print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
