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
- ``mlp``: MetaSchedule's own MLPModel (segment-sum MLP, LambdaRank loss), online from scratch;
  ``mlp-pre``: the same pre-trained on ``--corpus`` first (its ``train_full``);
- ``narformer-pre``: pre-trained offline, then fine-tuned online: the ``--pretrained`` cost model
  (``tunedb pretrain`` on a ``tunedb collect`` corpus), or without one the ``xgb`` records of the
  *other* tasks (leave one task out); ``narformer-pre-p128``: the same with an evolutionary search
  population of 128 (``tune --population 128``; MetaSchedule's default 512);
- ``predict-only``: the pre-trained model explores by prediction alone, then the best 8 schedules are
  built and run.

Every run is resumable (one MetaSchedule work dir per task/method/seed; finished ones are kept). A
method that cannot run on a task is recorded (``failed.json``) and reported, and the others go on:
MetaSchedule's MLPModel online from scratch fails on a single task (its ``train_full`` splits whole tasks
into train and test and has none for the test), so ``mlp`` runs only where its data holds several tasks.
``report`` reads the tuning records in commit order: best latency within the first 32/64/128 trials,
the trials each method needs to reach xgb's final latency, wall time and the cost model's share; then
per method, over tasks and seeds, the issue's targets: the geometric mean of best@64 relative to xgb's
and to xgb-warm16's (per seed, averaged over seeds), and the share of runs reaching xgb's 128-trial
latency within 64 trials. The JSON beside the table holds every run's whole tuning curve.
With ``--corpus``, ``run`` first checks that no benchmark task is a workload of the corpus.
The targets read xgb at 128 trials and every method at 64: run ``--methods xgb --trials 128``, then the
others with ``--trials 64`` into the same ``--work`` (a budget beyond a run's trials is left blank).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
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
    "resnet50_stem_7x7_s2": ("conv2d", dict(n=1, c=3, h=224, w=224, k=64, r=7, s=2)),
    "bert_base_qkv_matmul": ("dense", dict(m=128, k=768, n=2304)),
    "bert_base_attention_scores": ("batch_matmul", dict(b=12, m=128, k=64, n=128)),
}
METHODS = ("xgb", "xgb-warm16", "random", "mlp", "mlp-pre", "narformer", "narformer-pre", "narformer-pre-p128",
           "predict-only")
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
    if kind == "batch_matmul":  # q @ k^T of each head
        a = te.placeholder((p["b"], p["m"], p["k"]), name="q")
        b = te.placeholder((p["b"], p["n"], p["k"]), name="k")
        return te.create_prim_func([a, b, topi.nn.batch_matmul(a, b)])
    a = te.placeholder((p["m"], p["k"]), name="a")
    b = te.placeholder((p["n"], p["k"]), name="b")
    return te.create_prim_func([a, b, topi.nn.dense(a, b)])


def run_one(work: Path, task: str, method: str, trials: int, seed: int, cores: int,
            pretrained: str | None = None, corpus: list[str] = ()) -> dict:

    from narformer_tvm.integrations.tvm_cost_model import NARFormerCostModel
    from narformer_tvm.integrations.tvm_env import (
        fast_builder,
        host_target,
        meta_schedule,
    )
    from narformer_tvm.integrations.tvm_records import measure_top, predict_only
    from narformer_tvm.integrations.tvm_tuning import POPULATION, evolutionary_search

    ms = meta_schedule()
    out = work / task / f"{method}-s{seed}"
    done = out / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    shutil.rmtree(out, ignore_errors=True)  # a run cut off earlier: its records would join this run's curve
    out.mkdir(parents=True)
    target = host_target(cores)
    builder, runner, database = fast_builder(), "local", "json"
    if method in ("xgb", "random"):
        cm = method
    elif method == "xgb-warm16":  # xgb's model from the 17th sample on, as narformer (its default waits for 100)
        cm = timed_xgb(ms, num_warmup_samples=16)
    elif method in ("mlp", "mlp-pre"):
        cm = mlp_model(ms, corpus if method == "mlp-pre" else [], seed, work)
    elif pretrained and method in ("narformer-pre", "narformer-pre-p128", "predict-only"):
        cm = NARFormerCostModel(seed=seed, pretrained=pretrained)
    else:
        cm = NARFormerCostModel(seed=seed)
        if method in ("narformer-pre", "narformer-pre-p128", "predict-only"):
            others = [str(p) for t in TASKS if t != task for p in [work / t / f"xgb-s{seed}"]
                      if (p / "database_tuning_record.json").exists()]
            if not others:
                raise SystemExit(f"{task}/{method}: run xgb on the other tasks first")
            cm.pretrain(others, steps=300)
        if method == "predict-only":
            builder, runner = predict_only(cm)
            database = ms.database.MemoryDatabase()
    strategy = evolutionary_search(ms, 128 if method.endswith("-p128") else POPULATION)  # as `tune --population`
    t0 = time.time()
    db = ms.tune_tir(workload(task), target, str(out), trials, num_trials_per_iter=32, builder=builder,
                     runner=runner, database=database, cost_model=cm, seed=seed, strategy=strategy)
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
    return timed(ms.cost_model.XGBModel, **kw)


def timed(model_class, **kw):
    """A MetaSchedule cost model (an FFI-wrapped class) whose predict/update time is summed in ``.seconds``."""
    cls = model_class._cls  # the Python class behind the FFI wrapper
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
    cm = model_class(**kw)
    cm._inst._seconds = cm.seconds = seconds
    return cm


def mlp_model(ms, corpus: list[str], seed: int, cache_dir: Path | None = None):
    """MetaSchedule's MLPModel; with ``corpus`` (tunedb collect folders) pre-trained on all their records
    first, as its own ``State.load`` of raw databases followed by ``train_full`` would. The pre-trained
    state is kept in ``cache_dir``, one per seed and corpus state (every task's run would train the same model)."""
    import importlib
    import random

    import torch

    random.seed(seed)  # train_full draws its test split with Python's random
    torch.manual_seed(seed)
    _step_lr_takes_verbose(torch)
    mlp = importlib.import_module(ms.__name__ + ".cost_model.mlp_model")
    cm = timed(mlp.MLPModel)
    trainer = cm._inst.trainer
    stamp = [(str(d), (Path(d) / "database_tuning_record.json").stat().st_size) for d in corpus]
    key = hashlib.sha1(json.dumps(stamp).encode()).hexdigest()[:10]
    cache = cache_dir / f"mlp-pretrained-s{seed}-{key}.tar" if cache_dir and corpus else None
    if cache and cache.is_file():
        trainer.state.load(str(cache))
        trainer.state.untrained_size = 0  # as train_full leaves it
        return cm
    for d in corpus:
        db = ms.database.JSONDatabase(str(Path(d) / "database_workload.json"),
                                      str(Path(d) / "database_tuning_record.json"), allow_missing=False)
        by_task: dict[str, list] = {}
        for rec in db.get_all_tuning_records():
            by_task.setdefault(ms.utils.shash2hex(rec.workload.mod), []).append(rec)
        for task_key, recs in by_task.items():
            ctx = ms.TuneContext(mod=recs[0].workload.mod, target=recs[0].target)
            results = [ms.runner.RunnerResult(run_secs=r.run_secs, error_msg=None) for r in recs]
            feats, costs = mlp.extract_features(ctx, [r.as_measure_candidate() for r in recs], results,
                                                trainer.state.extractor)
            trainer.state.add_to_group(feats, costs, task_key)
    if trainer.state.data_size:
        trainer.train_full()
        if cache:
            trainer.state.save(str(cache))
    return cm


def _step_lr_takes_verbose(torch) -> None:
    """MLPModel's train_full passes StepLR(verbose=True), an argument torch 2.13 no longer takes."""
    import inspect

    step_lr = torch.optim.lr_scheduler.StepLR
    if "verbose" in inspect.signature(step_lr.__init__).parameters:
        return

    class StepLR(step_lr):
        def __init__(self, *args, verbose=None, **kwargs):
            super().__init__(*args, **kwargs)
    torch.optim.lr_scheduler.StepLR = StepLR


def tasks_in_corpus(tasks: list[str], corpus: list[str]) -> list[str]:
    """The benchmark tasks that are workloads of a corpus (they would not be held out)."""
    ms = meta_schedule_module()
    dbs = [ms.database.JSONDatabase(str(Path(d) / "database_workload.json"),
                                    str(Path(d) / "database_tuning_record.json"), allow_missing=False) for d in corpus]
    return [t for t in tasks if any(db.has_workload(ms.tune_context._normalize_mod(workload(t))) for db in dbs)]


def meta_schedule_module():
    from narformer_tvm.integrations.tvm_env import meta_schedule

    return meta_schedule()


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


def report(work: Path, out: Path, seeds: list[int], tasks: list[str]) -> None:
    lines = ["# NAR-Former V2 as a MetaSchedule cost model vs xgb, MLPModel and random", "",
             "Best latency found (us) within the first 32 / 64 / 128 measured trials; `to xgb@128`: trials "
             "needed to reach xgb's 128-trial latency; `cm share`: update+predict time / tuning wall time.", "",
             "| task | seed | method | best@32 | best@64 | best@128 | last best / xgb@128 | to xgb@128 | wall s | cm share |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows = []
    fmt = lambda v: f"{v:.1f}" if v else "-"  # noqa: E731
    for task in tasks:
        for seed in seeds:
            ref_curve = curve(work / task / f"xgb-s{seed}")
            ref = ref_curve[-1] if ref_curve else None
            for method in METHODS:
                d = work / task / f"{method}-s{seed}"
                if not (d / "result.json").exists():
                    if (d / "failed.json").exists():
                        error = json.loads((d / "failed.json").read_text())["error"].splitlines()[0][:120]
                        lines.append(f"| {task} | {seed} | {method} | did not run: {error} | | | | | | |")
                    continue
                res = json.loads((d / "result.json").read_text())
                c = curve(d)
                # a budget beyond the trials asked is left blank (a run asked 128 may measure fewer: a small space)
                at = [c[min(b, len(c)) - 1] * 1e6 if c and res["trials"] >= b else None for b in BUDGETS]
                last = next((v for v in reversed(at) if v), None)
                reach = next((i + 1 for i, v in enumerate(c) if ref and v <= ref * 1.0001), None)
                share = sum(res["cost_model_seconds"].values()) / res["seconds"] if res["cost_model_seconds"] else None
                rows.append({**res, "best_us": at, "reach_xgb": reach, "share": share, "curve_s": c})
                lines.append(f"| {task} | {seed} | {method} | {fmt(at[0])} | {fmt(at[1])} | {fmt(at[2])} | "
                             f"{last / (ref * 1e6):.2f} | {reach or '-'} | {res['seconds']:.0f} | "
                             f"{f'{100 * share:.0f}%' if share is not None else '-'} |" if ref and last else
                             f"| {task} | {seed} | {method} | - | - | - | - | - | {res['seconds']:.0f} | - |")
    lines += ["", *summary(rows, seeds), "", "Reproduce:", "", "```bash",
              f"python examples/bench_costmodel.py run --work {work} --seeds {','.join(map(str, seeds))}",
              f"python examples/bench_costmodel.py report --work {work} --seeds {','.join(map(str, seeds))} --out {out}",
              "```", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


def summary(rows: list[dict], seeds: list[int]) -> list[str]:
    """The issue's targets per method: geometric mean over tasks of best@64 relative to xgb's and to
    xgb-warm16's best@64 (per seed, then the mean over seeds), runs reaching xgb@128 within 64 trials."""
    by = {(r["task"], r["seed"], r["method"]): r for r in rows if r["best_us"][1]}
    lines = ["| method | best@64 / xgb@64 (geomean) | best@64 / xgb-warm16@64 | reaches xgb@128 within 64 | "
             "cost model share (median) |", "| --- | --- | --- | --- | --- |"]
    for method in METHODS:
        per_seed = {ref: [] for ref in ("xgb", "xgb-warm16")}
        reach, shares = [], []
        for seed in seeds:
            for ref in per_seed:
                logs = [math.log(r["best_us"][1] / by[(t, seed, ref)]["best_us"][1])
                        for (t, s_, m), r in by.items() if m == method and s_ == seed and (t, seed, ref) in by]
                if logs:
                    per_seed[ref].append(math.exp(statistics.mean(logs)))
            for (t, s_, m), r in by.items():
                if m == method and s_ == seed:
                    reach.append(r["reach_xgb"] is not None and r["reach_xgb"] <= 64)
                    if r["share"] is not None:
                        shares.append(r["share"])
        if not reach:
            continue
        ratio = {ref: f"{statistics.mean(v):.2f}" + (f" (seeds {', '.join(f'{x:.2f}' for x in v)})" if len(v) > 1 else "")
                 if v else "-" for ref, v in per_seed.items()}
        lines.append(f"| {method} | {ratio['xgb']} | {ratio['xgb-warm16']} | {sum(reach)} / {len(reach)} | "
                     f"{f'{100 * statistics.median(shares):.0f}%' if shares else '-'} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=["run", "report"])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--trials", type=int, default=128)
    ap.add_argument("--seeds", default="0", help="comma-separated")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--pretrained", help="narformer-pre/predict-only: a cost model from `tunedb pretrain`")
    ap.add_argument("--corpus", default="", help="comma-separated `tunedb collect` folders: mlp-pre trains on "
                                                 "them; no benchmark task may be one of their workloads")
    ap.add_argument("--out", type=Path, default=Path("docs/results/costmodel.md"))
    args = ap.parse_args()
    seeds, tasks = [int(s) for s in args.seeds.split(",")], args.tasks.split(",")
    corpus = [c for c in args.corpus.split(",") if c]
    if args.phase == "report":
        return report(args.work, args.out, seeds, tasks)
    if corpus and (seen := tasks_in_corpus(tasks, corpus)):
        raise SystemExit(f"tasks in the corpus, so not held out: {', '.join(seen)}")
    methods = [m for m in METHODS if m in args.methods.split(",")]  # xgb first: pre-training reads its records
    for seed in seeds:
        for method in methods:
            for task in tasks:
                try:
                    r = run_one(args.work, task, method, args.trials, seed, args.cores, args.pretrained, corpus)
                except Exception as e:  # a method that cannot run on a task is a result too, not the end
                    r = {"task": task, "method": method, "seed": seed, "error": f"{type(e).__name__}: {e}"}
                    (args.work / task / f"{method}-s{seed}" / "failed.json").write_text(json.dumps(r, indent=2))
                print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
