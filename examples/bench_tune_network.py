"""Whole-network tuning with each cost model: how soon does it reach XGBoost's final network latency?

    python examples/bench_tune_network.py run resnet.onnx vit.onnx --work /tmp/bench-net --trials 256 \
        --seeds 0,1,2 --pretrained cm.pt
    python examples/bench_tune_network.py report --work /tmp/bench-net --seeds 0,1,2 --out docs/results/tune-network.md

Each network is tuned by `narformer-tvm tune`'s joint (gradient) task scheduler with the same trials and
seed under every method: ``xgb`` (MetaSchedule's default), ``xgb-warm16`` (its model used from the 17th
measurement), ``random``, ``narformer`` (from scratch, online) and ``narformer-pre`` (the ``--pretrained``
cost model, fine-tuned online); ``narformer-pre-p128`` and ``-p256``: the same with a search population of
128 or 256 (MetaSchedule's is 512); ``narformer-pre-p128-x2``: population 128 and twice the trials, about
the time of the full population's run; ``xgb-share`` and ``narformer-pre-share`` tune with the ``share``
scheduler (``--task-latency``: only the tasks that make up all but 1% of the predicted network latency).
The tuning curve is the sum over tasks of weight x best latency so far after each measured batch (what
the scheduler optimises); the target reads it against wall time:
seconds until a method's curve reaches xgb's final value, as a share of xgb's tuning time. The tuned
network is also built and measured at the end. Runs are resumable (one folder per network/method/seed).
Use networks none of whose tasks are in the pre-training corpus. The share methods' curves leave out the
tasks kept at their default schedules, so they are read by the tuned build's measured latency only.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import statistics
from dataclasses import asdict
from pathlib import Path

METHODS = ("xgb", "xgb-warm16", "random", "narformer", "narformer-pre", "narformer-pre-p256", "narformer-pre-p128",
           "narformer-pre-p128-x2", "xgb-share", "narformer-pre-share")


def run_one(work: Path, net: Path, method: str, trials: int, seed: int, pretrained: str | None,
            threads: int = 0, task_latency: str | None = None) -> dict:
    from narformer_tvm.integrations.tvm_tuning import tune_onnx

    out = work / net.stem / f"{method}-s{seed}"
    done = out / "report.json"
    if done.exists():
        return json.loads(done.read_text())
    if method.startswith("narformer-pre") and not pretrained:
        raise SystemExit(f"{method} needs --pretrained (a cost model from `tunedb pretrain`)")
    if method.endswith("-share") and not task_latency:
        raise SystemExit(f"{method} needs --task-latency (a model from `tunedb task-latency`)")
    shutil.rmtree(out, ignore_errors=True)  # a run cut off earlier: its records would join this run's curve
    base, population, times = re.fullmatch(r"(.+?)(?:-p(\d+))?(?:-x(\d+))?", method.removesuffix("-share")).groups()
    search = {"population": int(population)} if population else {}  # -pN: the evolutionary search's population
    trials *= int(times or 1)  # -xK: K times the trials (a cheaper search given about the same time)
    name = {"xgb-warm16": "xgb", "narformer-pre": "narformer"}.get(base, base)
    kwargs = {"xgb-warm16": {"num_warmup_samples": 16}, "narformer-pre": {"pretrained": pretrained}}.get(base, {})
    share = {"scheduler": "share", "task_latency": task_latency} if method.endswith("-share") else {}
    report = tune_onnx(net, out, trials, name, threads=threads, seed=seed, cost_model_kwargs=kwargs,
                       compare_onnxruntime=False, **search, **share)
    result = {**asdict(report), "method": method, "seed": seed, "network": net.stem}
    done.write_text(json.dumps(result, indent=2))
    return result


def rebuild(work: Path, networks: list[Path], threads: int) -> None:
    """Build each finished run's tuned network again from its database and measure it, and recompute its
    curve from its measured batches (runs whose tuned build had missed the tuned schedules)."""
    from narformer_tvm.integrations.tvm_tuning import CURVE, measure_tuned, network_curve

    for net in networks:
        for done in sorted((work / net.stem).glob("*-s*/report.json")):
            r = json.loads(done.read_text())
            if r.get("rebuilt"):
                continue
            ms = measure_tuned(net, done.parent, threads=threads, seed=r["seed"])
            weights = [t["weight"] for t in r["tasks"] if not t.get("default_schedule")]
            r.update(tuned_ms_before_rebuild=r["tuned_ms"], tuned_ms=ms, rebuilt=True,
                     curve=network_curve(done.parent / CURVE, weights))
            done.write_text(json.dumps(r, indent=2))
            print(f"{net.stem} {r['method']} seed {r['seed']}: tuned {ms:.3f} ms "
                  f"(was {r['tuned_ms_before_rebuild']:.3f})", flush=True)


def report(work: Path, out: Path, seeds: list[int]) -> None:
    from narformer_tvm.integrations.tvm_tuning import time_to_reach

    lines = ["# Whole-network tuning: time to reach XGBoost's final network latency", "",
             "Curve: sum over tasks of weight x best latency so far (us). `to xgb final`: tuning seconds until the "
             "curve reaches xgb's final value, and that as a share of xgb's tuning time. `tuned ms`: the tuned build "
             "measured.", "",
             "| network | seed | method | final curve us | / xgb | to xgb final (s) | share of xgb time | tuned ms | "
             "tuning s | cost model s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    shares: dict[str, list] = {m: [] for m in METHODS}
    builds: dict[str, list] = {m: [] for m in METHODS}  # tuned build's latency / xgb's, same network and seed
    cm_share: dict[str, list] = {m: [] for m in METHODS}  # cost model seconds / tuning seconds
    for net in sorted(p.name for p in work.iterdir() if p.is_dir()):
        for seed in seeds:
            ref_path = work / net / f"xgb-s{seed}" / "report.json"
            if not ref_path.exists():
                continue
            ref = json.loads(ref_path.read_text())
            if not ref["curve"]:  # the curve starts once every task has a measurement
                lines.append(f"| {net} | {seed} | xgb | no network latency: fewer trials than tasks, some never "
                             "measured | | | | | | |")
                continue
            ref_final, ref_time = ref["curve"][-1][1], ref["tuning_seconds"]
            for method in METHODS:
                path = work / net / f"{method}-s{seed}" / "report.json"
                if not path.exists():
                    continue
                r = json.loads(path.read_text())
                partial = any(t.get("default_schedule") for t in r["tasks"])  # a curve over the tuned tasks only
                curve = [] if partial else [tuple(c) for c in r["curve"]]
                reach = time_to_reach(curve, ref_final) if curve else None
                share = reach / ref_time if reach is not None else None
                if not partial:
                    shares[method].append(share)
                builds[method].append(r["tuned_ms"] / ref["tuned_ms"])
                cm_share[method].append(sum(r["cost_model_seconds"].values()) / r["tuning_seconds"])
                final = curve[-1][1] if curve else None
                if final is None:
                    why = "tasks at default schedules" if partial else "no network latency: some tasks never measured"
                    lines.append(f"| {net} | {seed} | {method} | {why} | | | | {r['tuned_ms']:.3f} | "
                                 f"{r['tuning_seconds']:.0f} | {sum(r['cost_model_seconds'].values()):.0f} |")
                    continue
                lines.append(f"| {net} | {seed} | {method} | {final:.1f} | {final / ref_final:.2f} | "
                             f"{f'{reach:.0f}' if reach is not None else 'not reached'} | "
                             f"{f'{100 * share:.0f}%' if share is not None else '-'} | {r['tuned_ms']:.3f} | "
                             f"{r['tuning_seconds']:.0f} | {sum(r['cost_model_seconds'].values()):.0f} |"
                             if final else f"| {net} | {seed} | {method} | - | - | - | - | - | - | - |")
    lines += ["", "| method | runs | tuned build / xgb's (geometric mean) | cost model share of tuning time (median) |",
              "| --- | --- | --- | --- |"]
    lines += [f"| {m} | {len(v)} | {math.exp(statistics.fmean(math.log(x) for x in v)):.3f} | "
              f"{100 * statistics.median(cm_share[m]):.0f}% |" for m, v in builds.items() if v]
    lines += ["", "| method | runs reaching xgb's final latency | within 50% of xgb's time | median share |",
              "| --- | --- | --- | --- |"]
    for method, v in shares.items():
        if v:
            got = [x for x in v if x is not None]
            lines.append(f"| {method} | {len(got)} / {len(v)} | {sum(x <= 0.5 for x in got)} / {len(v)} | "
                         f"{f'{100 * statistics.median(got):.0f}%' if got else '-'} |")
    lines += ["", "Reproduce:", "", "```bash", f"python examples/bench_tune_network.py run NETWORKS --work {work} "
              f"--seeds {','.join(map(str, seeds))} --pretrained CM",
              f"python examples/bench_tune_network.py report --work {work} --seeds {','.join(map(str, seeds))} "
              f"--out {out}", "```", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=["run", "rebuild", "report"])
    ap.add_argument("networks", nargs="*", type=Path)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--trials", type=int, default=256)
    ap.add_argument("--seeds", default="0", help="comma-separated")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--pretrained")
    ap.add_argument("--task-latency", help="the share methods' task-latency model (`tunedb task-latency`)")
    ap.add_argument("--threads", type=int, default=0, help="cores for the tuned code (0: all physical cores); "
                    "the corpus' --threads, so that its records rank schedules as measured here")
    ap.add_argument("--corpus", default="", help="comma-separated `tunedb collect` folders the pre-trained cost "
                    "model learnt from: a network sharing a task with them is refused (not held out)")
    ap.add_argument("--out", type=Path, default=Path("docs/results/tune-network.md"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.phase == "report":
        return report(args.work, args.out, seeds)
    if args.phase == "rebuild":
        return rebuild(args.work, args.networks, args.threads)
    if corpus := [c for c in args.corpus.split(",") if c]:
        from narformer_tvm.integrations.tvm_collect import shared_tasks

        for net in args.networks:
            shared, n = shared_tasks(net, corpus)
            print(f"{net}: {n} tasks, {len(shared)} in the corpus{': ' + ', '.join(shared) if shared else ''}")
            if shared:
                raise SystemExit(f"{net} shares tasks with the corpus, so it is not held out")
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown methods {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}")
    methods = sorted(args.methods.split(","), key=lambda m: m != "xgb")  # xgb first: the others are read against it
    for seed in seeds:
        for net in args.networks:
            for method in methods:
                r = run_one(args.work, net, method, args.trials, seed, args.pretrained, args.threads,
                            args.task_latency)
                print(json.dumps({k: r[k] for k in ("network", "method", "seed", "tuned_ms", "tuning_seconds")}),
                      flush=True)


if __name__ == "__main__":
    main()
