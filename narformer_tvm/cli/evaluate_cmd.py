"""``evaluate``: NAR-Former V2 against baselines on the same splits, with a report."""
from __future__ import annotations

import sys

import click

from narformer_tvm.cli.options import (
    SeedList,
    accuracy_args,
    accuracy_options,
    model_options,
    parse_train_options,
    regime_correct_from,
    task_option_set,
)
from narformer_tvm.cli.train_cmd import _dataset_profile
from narformer_tvm.cli.ui import progress_bar, warn_above


@click.command()
@task_option_set
@click.option("--db", "db_path", type=click.Path(path_type=str), default=None)
@click.option("--runtime", default=None)
@click.option("--target", default=None)
@click.option("--seeds", type=SeedList(), default="5", show_default=True,
              help="accuracy task: a count N (seeds 0 to N-1), or the seeds to run, listed (1,3) or ranged (3-4): "
                   "processes given different seeds can share --out, e.g. one per core.")
@click.option("--protocol", type=click.Choice(["same", "lofo", "random"]), default="same", show_default=True,
              help="same: per-family last 10% test; lofo: leave one family out; random: 10% random test.")
@click.option("--methods", "methods_spec", default="main", show_default=True,
              help="Comma-separated methods and groups: main (flops, flops_mac, nnlp, narformer, narformer_flops_mac), "
                   "ablations, all.")
@click.option("--runs", type=click.IntRange(min=1), default=1, show_default=True, help="Independent runs (mean and best).")
@click.option("--out", type=click.Path(file_okay=False, path_type=str), required=True, help="Report folder.")
@click.option("--predictor", "predictor_spec", metavar="PATH|PROFILE", default=None,
              help="Score this trained predictor on every model of --db instead (nothing is trained; "
                   "--protocol and --methods do not apply), e.g. on measured published networks.")
@click.option("--test-split", "test_split", is_flag=True,
              help="With --predictor: score only the models `train` holds out of --db (each family's last 10%), "
                   "e.g. an older predictor on the test set of a dataset that has grown since.")
@click.option("--per-family", type=click.IntRange(min=2), default=None,
              help="Use only the first N models of each family (quicker protocol runs).")
@click.option("--hold-out", "hold_out", default=None, metavar="FAMILIES",
              help="lofo: hold out only these families (comma-separated; default each in turn), e.g. half of them "
                   "per core, every process with the same --out (finished splits merge there); the command without "
                   "--hold-out then writes the whole report.")
@click.option("--save-predictors", is_flag=True,
              help="Keep each model trained (NAR-Former, NNLP) as OUT/predictors/METHOD-runN-SPLIT.pt with its "
                   "dataset and test metrics, e.g. to ship the same-split winner without training it again.")
@model_options
def evaluate(task, benchmark, data_path, train_size, db_path, runtime, target, seeds, protocol, methods_spec, runs,
             out, predictor_spec, test_split, per_family, hold_out, save_predictors, **kw):
    """Compare NAR-Former V2 with baselines on a dataset; writes a Markdown report and plots.
    With --task accuracy: Kendall's tau on all cells and on the held-out ones, over several seeds."""
    if task == "ort-configs":
        raise click.UsageError("the ort-configs task is evaluated by `train --task ort-configs` (held-out models) "
                               "and by examples/bench_tune_ort.py")
    if hold_out and (task == "accuracy" or predictor_spec is not None):
        raise click.UsageError("--hold-out chooses leave-one-family-out splits of the latency task's training runs")
    if test_split and predictor_spec is None:
        raise click.UsageError("--test-split scores a trained --predictor on the models `train` held out")
    if save_predictors and (predictor_spec is not None or task != "latency"):
        raise click.UsageError("--save-predictors keeps the models the latency task trains (not with --predictor)")
    if task == "accuracy":
        return _evaluate_accuracy(benchmark, data_path, train_size, seeds, methods_spec, out, kw, db_path)
    if not db_path:
        raise click.UsageError("the latency task needs --db DATASET")
    from pathlib import Path

    from narformer_tvm.data.labels import (
        LABEL_STATISTIC,
        REGIME_CORRECTED,
        SITTING_CORRECTED,
        labels_corrected,
        noise_floors,
    )
    from narformer_tvm.data.store import Store
    from narformer_tvm.learn.evaluate import (
        cap_per_family,
        conflicting_overrides,
        method_names,
        write_report,
    )
    from narformer_tvm.learn.evaluate import evaluate as run_eval
    from narformer_tvm.learn.samples import load_samples

    model, feats, fit = parse_train_options(kw)
    if feats:
        raise click.UsageError("--op-encoding/--attr-encoding are set per method in evaluate (see ablations)")
    if predictor_spec is not None and model:
        raise click.UsageError(f"--predictor scores a trained predictor: model options ({', '.join(model)}) do not apply")
    if predictor_spec is None and (conflicts := conflicting_overrides(method_names(methods_spec), model)):
        raise click.UsageError("a model option would be ignored: " + "; ".join(conflicts) +
                               ". Drop it, or choose methods that leave it open (e.g. --methods narformer)")
    regime_correct, mean_passes = regime_correct_from(kw), kw["mean_passes"]
    if predictor_spec is not None:
        from narformer_tvm.data.labels import label_options
        from narformer_tvm.model.load import load_predictor
        from narformer_tvm.profiles import resolve_predictor

        scored = load_predictor(resolve_predictor(predictor_spec))
        learned = label_options(scored.profile)
        regime_correct = regime_correct_from(kw, learned["regime_correct"])
        mean_passes = learned["mean_passes"] if mean_passes is None else mean_passes
    samples, cfg = load_samples(db_path, runtime, target, include_noisy=kw["include_noisy"],
                                regime_correct=regime_correct, mean_passes=bool(mean_passes))
    if per_family:
        samples = cap_per_family(samples, per_family)
    with Store(db_path, readonly=True) as store:  # the noise floor of the labels the methods are scored on
        later = noise_floors(store, cfg["id"])
        noise = later.pop("repeat", {})
    correction = labels_corrected(cfg)
    statistic = SITTING_CORRECTED if correction == "sitting" else REGIME_CORRECTED if correction else LABEL_STATISTIC
    nf = noise.get(statistic, {}).get("mape")
    later_nf = {p: n[statistic]["mape"] for p, n in later.items() if statistic in n}
    command = "narformer-tvm evaluate " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
    if predictor_spec is not None:
        from narformer_tvm.errors import InputError
        from narformer_tvm.learn.evaluate import score_predictor
        from narformer_tvm.learn.samples import same_dataset, unseen_in_training
        from narformer_tvm.learn.splits import split_same_distribution

        left_out = ""
        if test_split:
            samples = [samples[i] for i in split_same_distribution(samples)[1]]
        elif same_dataset(db_path, scored.profile.get("dataset")):
            left_out = "; the dataset it was trained on: in-sample"
        else:  # another dataset: models graph-identical to ones it trained on are no test
            samples, seen = unseen_in_training(samples, scored.profile)
            left_out = ("; its training dataset is not here, so models it trained on may be among them" if seen is None
                        else f"; {seen} graph-identical to its training models left out")
        if not samples:
            raise InputError(f"{db_path}: every model is graph-identical to one the predictor trained on",
                             hint="score it on models it never saw")
        results = [score_predictor(scored, samples, "predictor")]
        which = "the held-out models (each family's last 10%)" if test_split else "every model"
        title = (f"predictor {predictor_spec} on {which} of {db_path} ({cfg['labels']} labels; "
                 f"{cfg['graph_duplicates']} graph duplicates merged{left_out})")
        path = write_report(results, out, title, nf, command, later_nf)
        click.echo(path.read_text())
        click.echo(f"report: {path}")
        return

    def keep(result, pred):
        pred.profile = _dataset_profile(cfg, db_path)
        pred.metadata["test"] = result.metrics()
        pred.metadata["validation"] = {"mape": result.val_mape}  # the number to choose a predictor to ship by
        pred.metadata["evaluated"] = {"protocol": result.protocol, "run": result.run, "split": result.split}
        pred.save(Path(out) / "predictors" / f"{result.method}-run{result.run}-{result.split}.pt")

    with progress_bar(speed_window_s=24 * 3600) as bar:  # a step is a whole training: average over the run
        task = bar.add_task(f"evaluating ({protocol})", total=None, status="")
        Path(out).mkdir(parents=True, exist_ok=True)  # finished splits are kept there: a rerun resumes
        results = run_eval(samples, protocol, method_names(methods_spec), runs, fit, model,
                           progress=lambda msg: bar.update(task, status=msg[-110:]),
                           checkpoint=Path(out) / "finished.json", notice=warn_above(bar),
                           hold_out=[f.strip() for f in hold_out.split(",") if f.strip()] if hold_out else None,
                           on_trained=keep if save_predictors else None,
                           steps=lambda i, n: bar.update(task, completed=i, total=n))
    title = f"{protocol} split on {db_path} ({cfg['labels']} labels; {cfg['graph_duplicates']} graph duplicates merged)"
    path = write_report(results, out, title, nf, command, later_nf)
    click.echo(path.read_text())
    click.echo(f"report: {path}")


def _evaluate_accuracy(benchmark, data_path, train_size, seeds, methods_spec, out, kw, db_path):
    from dataclasses import replace as dc_replace
    from pathlib import Path

    import numpy as np

    from narformer_tvm.graph.cells import load_benchmark
    from narformer_tvm.learn.nas import VALIDATION_CELLS, run_protocol

    accuracy_args(db_path, benchmark, data_path, train_size)
    opts = accuracy_options(kw)
    data = load_benchmark(benchmark, data_path)
    methods = ["narformer", "gnn"] if methods_spec in ("main", "all") else [m.strip() for m in methods_spec.split(",")]
    bad = [m for m in methods if m not in ("narformer", "gnn")]
    if bad:
        raise click.UsageError(f"accuracy methods are narformer and gnn, not {', '.join(bad)}")
    listed = "" if seeds == list(range(len(seeds))) else ": " + ", ".join(map(str, seeds))
    lines = [f"## {benchmark}: Kendall's tau with {train_size} training cells "
             f"({len(seeds)} seed{'s' if len(seeds) > 1 else ''}{listed})", "",
             "```", "narformer-tvm evaluate " + " ".join(sys.argv[2:]), "```", "",
             "| method | tau mean | tau best | held-out tau mean | held-out tau best | Spearman mean | MAPE mean "
             "| train s (mean) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with progress_bar() as bar:
        task = bar.add_task("evaluating", total=len(methods) * len(seeds), status="")
        for m in methods:
            o = dc_replace(opts, backbone="gnn" if m == "gnn" else opts.backbone)
            rows = []
            for seed in seeds:  # each finished seed is kept in <method>.json: a rerun resumes
                rows += run_protocol(data, train_size, [seed], o, VALIDATION_CELLS[benchmark],
                                     lambda msg, m=m, s=seed: bar.update(task, status=f"{m} seed {s}: {msg}"),
                                     checkpoint=out_dir / f"{m}.json",
                                     notice=warn_above(bar))
                bar.advance(task)
            taus = [r["kendall_tau"] for r in rows]
            held = [r.get("kendall_tau_held_out") for r in rows]  # rows saved before it was recorded lack it
            held = f"{np.mean(held):.4f} | {max(held):.4f}" if None not in held else "n/a | n/a"
            lines.append(f"| {m} | {np.mean(taus):.4f} | {max(taus):.4f} | {held} | "
                         f"{np.mean([r['spearman'] for r in rows]):.4f} | "
                         f"{100 * np.mean([r['mape'] for r in rows]):.2f}% | "
                         f"{np.mean([r['train_seconds'] for r in rows]):.0f} |")
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))
