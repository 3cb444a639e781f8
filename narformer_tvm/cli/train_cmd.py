"""``train``: latency, configuration-aware and NAS-cell predictors."""
from __future__ import annotations

import json

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
from narformer_tvm.cli.ui import make_console, progress_bar


@click.command()
@task_option_set
@click.option("--db", "db_path", type=click.Path(path_type=str), default=None,
              help="Dataset file (latency task).")
@click.option("--runtime", default=None, help="Select the configuration by runtime.")
@click.option("--target", default=None, help="Select the configuration by target.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=str), required=True, help="Predictor checkpoint to write.")
@click.option("--split", type=click.Choice(["same", "all"]), default="same", show_default=True,
              help="same: hold out each family's last 10% as a test set and report on it; all: train on everything.")
@click.option("--ensemble", type=click.IntRange(min=1), default=1, show_default=True,
              help="Models with different seeds; their spread is each prediction's uncertainty.")
@click.option("--members", type=SeedList(count=False), default=None,
              help="Train only these ensemble members (0-based: 2, 0,2 or 1-2): processes given different members "
                   "share --out, e.g. one per core; the one that finishes last writes the predictor.")
@click.option("--finetune", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Start from this predictor (few-shot transfer to a new target/runtime).")
@click.option("--recalibrate", is_flag=True,
              help="With --finetune: keep its weights and fit one factor on every prediction (the median of measured "
                   "over predicted on the training split): for the same hardware measured anew, or a close one.")
@click.option("--limit", type=click.IntRange(min=2), default=None, help="Use only this many training samples (few-shot).")
@click.option("--profile-dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Also write a hardware profile (profile.json + predictor.pt) to this folder.")
@model_options
def train(task, benchmark, data_path, train_size, db_path, runtime, target, out, split, ensemble, members, finetune,
          recalibrate, limit, profile_dir, **kw):
    """Train a latency predictor on a profiled dataset (resumable: rerun the same command), or with
    --task accuracy a cell accuracy predictor on NAS-Bench-201/101."""
    import numpy as np

    if members is not None and task != "latency":
        raise click.UsageError("--members applies to the latency task only")
    if members is not None and max(members) >= ensemble:
        raise click.UsageError(f"--members {','.join(map(str, members))}: the latency task's ensemble members are 0 to "
                               f"{ensemble - 1} (--ensemble {ensemble})")
    if recalibrate and (not finetune or task != "latency" or members is not None):
        raise click.UsageError("--recalibrate rescales a trained latency predictor: give it with --finetune PREDICTOR "
                               "(and without --members)")
    if task == "accuracy":
        return _train_accuracy(benchmark, data_path, train_size, out, kw)
    if not db_path:
        raise click.UsageError(f"the {task} task needs --db DATASET")
    if task == "ort-configs":
        return _train_ort_configs(db_path, target or "llvm", out, split, ensemble, finetune, profile_dir, kw)

    from narformer_tvm.learn.samples import load_samples
    from narformer_tvm.learn.splits import carve_validation, split_same_distribution
    from narformer_tvm.learn.train import TrainOptions, train_predictor
    from narformer_tvm.model.predictor import Predictor

    model, feats, fit = parse_train_options(kw)
    samples, cfg = load_samples(db_path, runtime, target, include_noisy=kw["include_noisy"],
                                regime_correct=regime_correct_from(kw), mean_passes=bool(kw["mean_passes"]))
    train_idx, test_idx = split_same_distribution(samples) if split == "same" else (list(range(len(samples))), [])
    if limit:
        train_idx = sorted(np.random.default_rng(kw["seed"]).permutation(train_idx)[:limit].tolist())
    tr, val = carve_validation(train_idx, 0.1, kw["seed"])
    init = Predictor.load(finetune) if finetune else None
    opts = TrainOptions(model=model, features=feats, fit=fit, ensemble=ensemble)
    con = make_console(stderr=True)
    con.print(f"{len(samples)} samples ({len(tr)} train, {len(val)} validation, {len(test_idx)} test) from "
              f"{db_path} [{json.dumps(cfg['config'])}]")
    if recalibrate:
        from narformer_tvm.learn.train import recalibrate as rescale

        pred = rescale(init, [samples[i] for i in tr + val])
        con.print(f"{finetune} recalibrated: predictions x {pred.metadata['recalibrated']['factor']:.4f}")
    else:
        with progress_bar() as bar:
            task = bar.add_task("training", total=None, status="")
            pred = train_predictor([samples[i] for i in tr], [samples[i] for i in val], opts, checkpoint=out,
                                   progress=lambda msg: bar.update(task, status=msg), init=init, members=members)
    if pred is None:
        click.echo(f"ensemble member{'s' if len(members) > 1 else ''} {', '.join(map(str, members))} of {ensemble} "
                   f"trained; {out} is written by the run that finishes the last member (or rerun without --members)")
        return
    pred.profile = _dataset_profile(cfg, db_path)
    if not recalibrate and pred.metadata.get("val_mape") is not None:
        con.print(f"validation ({len(val)} models, the number to choose a predictor by): "
                  f"MAPE {100 * pred.metadata['val_mape']:.2f}%")
    if _test_metrics(pred, samples, test_idx):  # kept for its profile; shown once a choice is made
        con.print(f"test split ({len(test_idx)} held-out models) scored into the predictor's metadata, not shown: "
                  f"`narformer-tvm evaluate --db {db_path} --test-split --predictor {out}` shows it")
    pred.save(out)
    took = "recalibrated" if recalibrate else f"{pred.metadata['train_seconds']} s"
    click.echo(f"predictor written to {out} ({took})")
    if profile_dir:
        from narformer_tvm.learn.shipping import write_profile

        click.echo(f"hardware profile written to {write_profile(pred, profile_dir)}")


def _dataset_profile(cfg: dict, db_path) -> dict:
    """A trained latency predictor's profile: the measuring configuration and machine of its dataset."""
    return {"runtime": cfg["config"]["runtime"], "target": cfg["config"]["target"],
            "threads": cfg["config"].get("threads"), "config": cfg["config"], "fingerprint": cfg["fingerprint"],
            "dataset": str(db_path), "labels": cfg["labels"]}


def _test_metrics(pred, samples, test_idx) -> dict | None:
    """Metrics of a trained predictor on the held-out samples, recorded in its metadata."""
    from narformer_tvm.learn.evaluate import score_predictor

    if not test_idx:
        return None
    pred.metadata["test"] = score_predictor(pred, [samples[i] for i in test_idx], "test").metrics()
    return pred.metadata["test"]


def _train_ort_configs(db_path, target, out, split, ensemble, finetune, profile_dir, kw):
    from narformer_tvm.integrations.ort_config_predictor import (
        load_config_samples,
        split_by_source,
        train_config_predictor,
    )
    from narformer_tvm.learn.train import TrainOptions
    from narformer_tvm.model.predictor import Predictor
    from narformer_tvm.profiles import resolve_predictor

    _, _, fit = parse_train_options(kw)
    samples = load_config_samples(db_path, target, include_noisy=kw["include_noisy"])
    train_idx, test_idx = split_by_source(samples) if split == "same" else (list(range(len(samples))), [])
    base_path = resolve_predictor(finetune, checkpoint=True)
    base = Predictor.load(base_path)
    con = make_console(stderr=True)
    con.print(f"{len(samples)} measurements under {len({s.candidate for s in samples})} configurations "
              f"({len(train_idx)} train+validation, {len(test_idx)} test) from {db_path}; starting from {base_path}")
    with progress_bar() as bar:
        task = bar.add_task("training", total=None, status="")
        pred = train_config_predictor(samples, base, train_idx, TrainOptions(fit=fit), ensemble, checkpoint=out,
                                      progress=lambda msg: bar.update(task, status=msg))
    if m := _test_metrics(pred, samples, test_idx):
        con.print(f"test ({len(test_idx)} rows of held-out models): MAPE {100 * m['mape']:.2f}%  "
                  f"Acc(10%) {100 * m['acc10']:.1f}%  tau {m['kendall_tau']:.3f}")
    pred.save(out)
    click.echo(f"configuration-aware predictor written to {out} ({pred.metadata['train_seconds']} s)")
    if profile_dir:
        from narformer_tvm.learn.shipping import add_to_profile

        click.echo(f"hardware profile updated: {add_to_profile(profile_dir, 'ort_configs', out)}")


def _train_accuracy(benchmark, data_path, train_size, out, kw):
    import numpy as np

    from narformer_tvm.graph.cells import load_benchmark
    from narformer_tvm.learn.nas import (
        VALIDATION_CELLS,
        protocol_split,
        save_cell_predictor,
        train_accuracy,
    )

    accuracy_args(None, benchmark, data_path, train_size)
    opts = accuracy_options(kw)
    data = load_benchmark(benchmark, data_path)
    tr, va = protocol_split(len(data.cells), train_size, VALIDATION_CELLS[benchmark], opts.seed)
    with progress_bar() as bar:
        task = bar.add_task("training", total=None, status="")
        model, history = train_accuracy([data.cells[i] for i in tr], data.accuracy[tr], [data.cells[i] for i in va],
                                        data.accuracy[va], opts, lambda m: bar.update(task, status=m))
    from narformer_tvm.learn.metrics import kendall_tau, spearman
    from narformer_tvm.learn.nas import calibrate, held_out, predict_cells

    pred = predict_cells(model, data.cells, opts.n_freqs)
    rest = held_out(len(data.cells), tr, va)
    tau_all, tau_rest = kendall_tau(pred, data.accuracy), kendall_tau(pred[rest], data.accuracy[rest])
    seen = np.concatenate([tr, va])
    save_cell_predictor(model, opts, benchmark, out, {"train_size": train_size, "kendall_tau_all": tau_all,
                                                      "kendall_tau_unseen": tau_rest, "epochs_run": len(history)},
                        calibrate(model, [data.cells[i] for i in seen], data.accuracy[seen], opts.n_freqs))
    click.echo(f"Kendall tau: {tau_all:.4f} on all {len(data.cells)} cells, {tau_rest:.4f} on the {len(rest)} unseen "
               f"(neither trained on nor validated); "
               f"Spearman {spearman(pred, data.accuracy):.4f}; predictor written to {out}")


@click.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=str))
@click.option("--out", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="ONNX file to write (default: beside CHECKPOINT, .onnx).")
@click.option("--profile-dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Also name the export in this hardware profile's profile.json, so that `estimate` runs it.")
def export(checkpoint, out, profile_dir):
    """Export a trained latency predictor to ONNX: `estimate` then predicts without importing torch."""
    import json
    from pathlib import Path

    from narformer_tvm.model.export import export_onnx
    from narformer_tvm.model.predictor import Predictor

    pred = Predictor.load(checkpoint)
    out = Path(out or Path(checkpoint).with_suffix(".onnx"))
    if profile_dir:
        meta_path = Path(profile_dir) / "profile.json"
        if not meta_path.is_file():
            raise click.UsageError(f"{profile_dir}: no profile.json (write the profile with `train --profile-dir`)")
        out = Path(profile_dir) / out.name if out.parent == Path(".") else out
    export_onnx(pred, out)
    if profile_dir:
        meta = json.loads(meta_path.read_text())
        meta["onnx"] = str(out.resolve().relative_to(Path(profile_dir).resolve()))
        meta_path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    click.echo(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {len(pred.models)} member(s))")
