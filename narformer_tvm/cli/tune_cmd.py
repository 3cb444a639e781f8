"""``tune``, ``tunedb`` and ``tune-ort``: the compiler-side commands."""
from __future__ import annotations

import sys

import click

from narformer_tvm.cli.options import batch_option, input_shape_option
from narformer_tvm.cli.ui import make_console, progress_bar
from narformer_tvm.errors import NarformerError


@click.command("tune-ort")
@click.argument("model", type=click.Path(path_type=str))
@click.option("--target", type=click.Choice(["llvm", "cuda", "tensorrt"]), default="llvm", show_default=True)
@click.option("--top-k", type=click.IntRange(min=1), default=2, show_default=True,
              help="Measure this many best-predicted candidates (plus uncertain ones and the default).")
@click.option("--explore", type=click.IntRange(min=0), default=1, show_default=True,
              help="At most this many extra candidates whose uncertain prediction could still be the best.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=str), required=True,
              help="Folder for session_options.json, the chosen model variant and the measurements.")
@click.option("--predictor", "predictor_spec", default=None,
              help="A configuration-ratio model (.json), a configuration-aware predictor (.pt) or a hardware "
                   "profile name (default: cpu-onnxruntime).")
@click.option("--allow-lossy", is_flag=True,
              help="Also consider int8 (dynamic, static QDQ) and fp16 variants; each is checked against the "
                   "original model's outputs first and rejected beyond --max-output-error.")
@click.option("--calibration-data", default=None, metavar="FOLDER|MODULE:FUNCTION",
              help="Real inputs for static quantisation and the output check: a folder of .npy files (one "
                   "array per sample) or .npz files (arrays keyed by input name), or a function returning "
                   "such samples. Without it, random inputs are used and int8 outputs are not validated.")
@click.option("--max-output-error", type=click.FloatRange(min=0), default=None,
              help="Largest relative L2 error of any output against the original model (and smallest "
                   "top-1 agreement, as 1 - this, for class scores)  [default: 0.01]")
@click.option("--accuracy-check", default=None, metavar="MODULE:FUNCTION",
              help="Your own check instead: fn(inputs, reference, outputs), lists per sample, returns "
                   "True/False or a deviation held to --max-output-error.")
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True,
              help="Interleaved measuring passes over the chosen candidates (each keeps its lowest).")
@click.option("--regime-wait", type=click.FloatRange(min=0), default=30, show_default=True,
              help="Seconds the regime gate waits for the machine's fast regime before each measurement "
                   "(multi-thread CPU only; 0 = one probe, no waiting).")
@input_shape_option
@batch_option
def tune_ort_cmd(model, target, top_k, explore, out_dir, predictor_spec, allow_lossy, calibration_data,
                 max_output_error, accuracy_check, rounds, regime_wait, input_shapes, batch_size):
    """Pick the fastest ONNX Runtime configuration of MODEL by prediction, measuring only the best few.

    Candidates: the original model and ONNX Runtime's optimised graph (with --allow-lossy also dynamic
    and static int8, fp16 on CUDA), under every intra- and inter-op thread count, execution mode and
    graph optimisation level. Every measured candidate's outputs are first checked against the original
    model; failing ones are reported and never chosen. Writes session_options.json (load it with
    narformer_tvm.integrations.ort_tuning.open_session).
    """
    from rich.table import Table

    from narformer_tvm.graph.onnx_graph import load_model, parse_input_shapes
    from narformer_tvm.integrations.ort_tuning import tune_ort
    from narformer_tvm.measure.backends import MeasureConfig
    from narformer_tvm.measure.eval_data import load_callable, load_eval_data
    from narformer_tvm.measure.fidelity import DEFAULT_MAX_ERROR
    from narformer_tvm.measure.profiler import check_config
    from narformer_tvm.measure.regime_gate import gate_settings
    from narformer_tvm.profiles import load_ort_predictor

    shapes = parse_input_shapes(input_shapes)
    load_model(model, shapes, batch_size)  # a bad file fails here, with its name, before any work
    cfg = MeasureConfig(target=target)
    check_config(cfg)
    data = load_eval_data(calibration_data, model) if calibration_data else None
    user_check = load_callable(accuracy_check) if accuracy_check else None
    pred = load_ort_predictor(predictor_spec)
    console = make_console()
    with progress_bar() as bar:
        task = bar.add_task("measuring the chosen candidates", total=None, status="")
        result = tune_ort(model, pred, out_dir, top_k, explore, target, shapes, batch_size,
                          progress=lambda kind, i, n, msg: bar.update(task, completed=i, total=n, status=msg),
                          lossy=allow_lossy, data=data, max_error=max_output_error, user_check=user_check,
                          user_check_name=accuracy_check or "", rounds=rounds,
                          gate=gate_settings(cfg, wait_s=regime_wait))
    t = Table(title=f"tune-ort: {model} ({len(result.ranked)} candidates predicted, {len(result.measured)} measured)",
              title_justify="left")
    for col in ("candidate", "why measured", "predicted ms", "measured ms", "speedup vs default", "output check"):
        t.add_column(col, justify="left" if col in ("candidate", "why measured", "output check") else "right")
    ref = result.default.measured_ms if result.default else None
    for r in sorted(result.measured, key=lambda r: r.measured_ms or float("inf")):
        best = " [bold green]<- best[/bold green]" if r is result.best else ""
        passed = (r.fidelity or {}).get("passed")
        check = "-" if r.fidelity is None else ("pass" if passed else "[red]FAIL[/red]") + \
            f" ({r.fidelity.get('rel_error', float('nan')):.1e})"
        t.add_row(r.candidate.label + best, r.reason, f"{r.predicted_ms:.3f}",
                  f"{r.measured_ms:.3f}" + (" (noisy)" if r.noisy else "") if r.measured_ms else f"failed: {r.error}",
                  f"{ref / r.measured_ms:.2f}x" if ref and r.measured_ms else "-", check)
    console.print(t)
    tolerance = DEFAULT_MAX_ERROR if max_output_error is None else max_output_error
    console.print(f"Output check on {result.data}; tolerance {tolerance:g}.")
    for r in result.rejected:
        console.print(f"  [red]rejected[/red] {r.candidate.label}: {r.error}")
    if not allow_lossy:
        console.print("Lossy variants (int8, fp16) not considered: --allow-lossy adds them, each checked first.")
    elif result.best is not None and result.best.candidate.lossy and (data is None):
        console.print("[yellow]warning:[/yellow] the chosen variant changes numerics and was checked on random "
                      "inputs only: its outputs on real data are not validated. Pass --calibration-data.")
    if result.best is None:
        raise NarformerError("no candidate passed the output check and could be measured",
                             hint=f"see {out_dir}/candidates.json and {out_dir}/measurements.db")
    for kind, path in result.files.items():
        click.echo(f"{kind}: {path}")


@click.command()
@click.argument("model", type=click.Path(path_type=str))
@click.option("--trials", type=click.IntRange(min=1), default=64, show_default=True,
              help="Total trials over all the model's tasks.")
@click.option("--target", type=click.Choice(["llvm", "cuda"]), default="llvm", show_default=True,
              help="llvm: this CPU; cuda: this machine's GPU.")
@click.option("--scheduler", type=click.Choice(["gradient", "per-task", "share"]), default="gradient",
              show_default=True,
              help="gradient: MetaSchedule's task scheduler shares the trials by task weight and expected gain; "
                   "per-task: an even split, each task tuned on its own; share: gradient over the tasks that make "
                   "up all but --drop-share of the network's predicted latency (CPU only).")
@click.option("--task-latency", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="share: the task-latency model (tunedb task-latency); default: the one this machine's profile "
                   "ships, if any.")
@click.option("--drop-share", type=click.FloatRange(0, 0.5), default=0.01, show_default=True,
              help="share: the largest part of the predicted network latency left to default schedules (predicted "
                   "as tuned: a default schedule runs slower than that).")
@click.option("--compare-onnxruntime/--no-compare-onnxruntime", default=True, show_default=True,
              help="Also measure the model under ONNX Runtime.")
@click.option("--cost-model", type=click.Choice(["narformer", "xgb", "random"]), default="narformer", show_default=True)
@click.option("--pretrained", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="narformer: start from a cost model saved earlier (tunedb pretrain, or a previous tune); "
                   "default: the one this machine's hardware profile ships, if any.")
@click.option("--from-scratch", is_flag=True, help="narformer: ignore the profile's pre-trained cost model.")
@click.option("--frozen", is_flag=True, help="narformer: never retrain during tuning.")
@click.option("--predict-only", is_flag=True,
              help="Explore with the pre-trained cost model's predictions instead of builds and runs; measure "
                   "only the --measure-top best predicted schedules of each task (needs --pretrained).")
@click.option("--measure-top", type=click.IntRange(min=1), default=4, show_default=True,
              help="predict-only: schedules per task built and run for real.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=str), required=True,
              help="Where the tuning database and logs go.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Cores (0 = physical cores).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--population", type=int, default=None,
              help="Schedules the evolutionary search scores per generation, in every round of every task: the "
                   "cost model's work per round (default: MetaSchedule's 512). With the pre-trained NAR-Former, "
                   "128 tunes in about half the time and reaches XGBoost's result sooner, for tuned builds about "
                   "1.1x those of 512 (docs/results/tune-network-zen5.md).")
@input_shape_option
def tune(model, trials, target, scheduler, task_latency, drop_share, compare_onnxruntime, cost_model, pretrained,
         from_scratch, frozen, predict_only, measure_top, work_dir, threads, seed, population, input_shapes):
    """Tune MODEL's TVM tasks with a cost model, build the tuned network, and compare it with the untuned
    build and with ONNX Runtime; wall time per phase."""
    from rich.table import Table

    from narformer_tvm.graph.onnx_graph import parse_input_shapes
    from narformer_tvm.integrations.tvm_tuning import tune_onnx

    extra = {}
    if cost_model == "narformer":
        if not pretrained and not from_scratch:
            from narformer_tvm.profiles import shipped_cost_model

            found = shipped_cost_model(target)
            pretrained = str(found) if found else None
            click.echo(f"cost model: pre-trained {found}" if found else
                       "cost model: learning from scratch (no pre-trained one ships for this machine and target)")
        extra = {"pretrained": pretrained, "frozen": frozen}
    elif pretrained or frozen or predict_only:
        raise click.UsageError("--pretrained/--frozen/--predict-only apply to --cost-model narformer")
    if scheduler == "share" and not task_latency:
        from narformer_tvm.profiles import shipped_cost_model

        found = shipped_cost_model(target, "tvm_task_latency")
        task_latency = str(found) if found else None
    if predict_only and not pretrained:
        raise click.UsageError("--predict-only needs --pretrained (a cost model trained with `tunedb pretrain`)")
    with progress_bar() as bar:
        task = bar.add_task("tuning", total=None, status="")
        report = tune_onnx(model, work_dir, trials, cost_model, threads, parse_input_shapes(input_shapes), seed, extra,
                           progress=lambda m: bar.update(task, status=m), predict_only=predict_only,
                           measure_top_n=measure_top, target=target, scheduler=scheduler,
                           compare_onnxruntime=compare_onnxruntime, task_latency=task_latency,
                           drop_share=drop_share, **({"population": population} if population is not None else {}))
    search = f", search population {population}" if population is not None else ""
    t = Table(title=f"{model}: {cost_model}, {trials} trials ({scheduler} scheduler, {target}{search})",
              title_justify="left")
    shares = scheduler == "share"
    cols = ("task", "weight") + (("predicted share",) if shares else ()) + ("trials", "best us", "time s", "status")
    for col in cols:
        t.add_column(col, justify="left" if col in ("task", "status") else "right")
    for r in report.tasks:
        status = ("[red]" + r.error + "[/red]" if r.error else
                  "default schedule (small predicted share)" if r.default_schedule else "ok")
        t.add_row(r.name, str(r.weight), *((f"{100 * r.predicted_share:.1f}%",) if shares else ()), str(r.trials),
                  f"{r.best_us:.2f}" if r.best_us else "", f"{r.seconds:.0f}", status)
    make_console().print(t)
    cm_s = sum(report.cost_model_seconds.values())
    click.echo(f"untuned {report.untuned_ms:.4f} ms, tuned {report.tuned_ms:.4f} ms "
               f"(x{report.untuned_ms / report.tuned_ms:.2f}); tuning {report.tuning_seconds:.0f} s, of which cost model "
               f"{cm_s:.1f} s; database in {work_dir}")
    if report.onnxruntime_ms:
        faster = "TVM tuned" if report.tuned_ms < report.onnxruntime_ms else "ONNX Runtime"
        click.echo(f"ONNX Runtime {report.onnxruntime_ms:.4f} ms: {faster} is faster "
                   f"(x{max(report.onnxruntime_ms, report.tuned_ms) / min(report.onnxruntime_ms, report.tuned_ms):.2f})")
    elif compare_onnxruntime:
        click.echo("ONNX Runtime: not measured (no provider for this target, or the model failed there)")
    click.echo("wall time per phase: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.phases.items()))
    if report.curve:
        (s0, us0), (s1, us1) = report.curve[0], report.curve[-1]
        click.echo(f"tuning curve (sum of weight x best task latency): {us0:.1f} us at {s0:.0f} s, {us1:.1f} us at "
                   f"{s1:.0f} s; every batch in {work_dir}/tuning_curve.jsonl")
    if report.measured is not None:
        click.echo(f"predict-only: {sum(r.trials for r in report.tasks)} schedules explored by prediction, "
                   f"{report.measured} built and measured")
    if any(r.error for r in report.tasks):
        sys.exit(1)


@click.group()
def tunedb():
    """Tensor-program tuning records: pre-train the cost model offline."""


@tunedb.command("collect")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=str), required=True,
              help="Collection folder: one MetaSchedule database for all networks (a task shared by two networks "
                   "is collected once), networks.jsonl and tasks.jsonl.")
@click.option("--trials-per-task", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--search", "cost_model", type=click.Choice(["xgb", "random"]), default="xgb", show_default=True,
              help="What guides the evolutionary search that samples the schedules: the default tuner's XGBoost "
                   "(schedules as tuning meets them) or random scores (a wider spread).")
@click.option("--target", type=click.Choice(["llvm", "cuda"]), default="llvm", show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Cores (0 = physical cores).")
@click.option("--seed", type=int, default=0, show_default=True)
@input_shape_option
def tunedb_collect(models, out_dir, trials_per_task, cost_model, target, threads, seed, input_shapes):
    """Measure sampled schedules of every tuning task of MODELS (ONNX files or folders) into a corpus
    that `tunedb pretrain OUT` trains on. Resumable: rerun the same command. Keep the networks you will
    evaluate tuning on out of MODELS."""
    from narformer_tvm.estimate import collect_models
    from narformer_tvm.graph.onnx_graph import parse_input_shapes
    from narformer_tvm.integrations.tvm_collect import collect, summary

    paths = collect_models(models)
    with progress_bar() as bar:
        task = bar.add_task("collecting", total=None, status="")
        done = collect(paths, out_dir, trials_per_task, cost_model, target, threads, seed,
                       parse_input_shapes(input_shapes), progress=lambda m: bar.update(task, status=m))
    for rec in done:
        if rec.error:
            click.echo(f"{rec.name}: not collected ({rec.error})")
    s = summary(out_dir)
    click.echo(f"{len(done)} networks collected now; {out_dir}: {s['networks']} networks ({s['failed_networks']} "
               f"failed), {s['tasks']} tasks, {s['records']} records, {s['hours']:.2f} h of collection")


@tunedb.command("pretrain")
@click.argument("work_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=str))
@click.option("--out", type=click.Path(dir_okay=False, path_type=str), required=True)
@click.option("--steps", type=click.IntRange(min=1), default=20000, show_default=True,
              help="Most minibatch steps; with --validate, training stops when the held-out tau stops rising.")
@click.option("--eval-every", type=click.IntRange(min=1), default=500, show_default=True,
              help="Steps between scorings of the held-out tasks (the best scoring's weights are kept).")
@click.option("--patience", type=click.IntRange(min=1), default=4, show_default=True,
              help="Scorings without a new best before training stops.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--validate", type=click.FloatRange(0, 0.9), default=0.1, show_default=True,
              help="Share of the tasks kept out of training and scored (within-task Kendall tau); 0 trains "
                   "all --steps on every task.")
def tunedb_pretrain(work_dirs, out, steps, eval_every, patience, seed, validate):
    """Train the NAR-Former cost model on MetaSchedule databases in WORK_DIRS (`tunedb collect` corpora,
    `tune` work dirs). The file written holds the weights; `tune --pretrained FILE` fine-tunes it on the
    task at hand."""
    from narformer_tvm.integrations.tvm_cost_model import NARFormerCostModel

    cm = NARFormerCostModel(seed=seed)
    r = cm.pretrain(list(work_dirs), steps, validation_share=validate, eval_every=eval_every, patience=patience,
                    progress=click.echo)
    if not r["records"]:
        raise click.ClickException("no tuning records found")
    cm.save_weights(out)
    held = (f"; on {r['validation_tasks']} tasks kept out, within-task Kendall tau {r['validation_tau']:.3f} "
            f"(the best scoring, after {r['steps']} steps)" if r["validation_tasks"] else f"; {r['steps']} steps")
    click.echo(f"{r['records']} records of {r['tasks']} tasks from {len(work_dirs)} databases{held}; "
               f"cost model written to {out}")


@tunedb.command("task-latency")
@click.argument("work_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=str))
@click.option("--out", type=click.Path(dir_okay=False, path_type=str), required=True)
@click.option("--ridge", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
def tunedb_task_latency(work_dirs, out, ridge):
    """Fit the model that predicts a task's best latency from its design space (before measuring any of
    it) on the databases in WORK_DIRS; `tune --scheduler share` weighs tasks by it. Prints its 5-fold
    held-out accuracy over the tasks."""
    from narformer_tvm.integrations.tvm_task_latency import TaskLatencyModel, corpus_tasks, cross_validate

    with progress_bar() as bar:
        task = bar.add_task("design spaces", total=None, status="")
        features, log_seconds = corpus_tasks(work_dirs, progress=lambda m: bar.update(task, status=m))
    if len(features) < 10:
        raise click.ClickException(f"{len(features)} tasks with a measured record: too few to fit (10 or more)")
    cv = cross_validate(features, log_seconds, ridge)
    TaskLatencyModel.fit(features, log_seconds, ridge).save(out)
    click.echo(f"{cv['tasks']} tasks; held out (5 folds): Spearman {cv['spearman']:.3f}, within 2x "
               f"{100 * cv['within_2x']:.0f}%; model written to {out}")
