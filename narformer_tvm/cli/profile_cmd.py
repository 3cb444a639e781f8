"""``zoo`` and ``profile``: model variants, and measuring them into a dataset."""
from __future__ import annotations

import json
import sys

import click

from narformer_tvm.cli.options import batch_option, input_shape_option, opt_level_option, variant_option
from narformer_tvm.cli.ui import make_console, progress_bar


@click.command()
@click.option("--family", "family_spec", default="all", show_default=True,
              help="Families and groups, comma-separated: 'all' (the twelve hand-written families), 'nnlqp' "
                   "(NNLQP's ten), 'corpus' (real architectures from transformers: bert, gpt2, swin, ...), or names.")
@click.option("--count", type=click.IntRange(min=1), default=10, show_default=True, help="Variants per family.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=str), required=True, help="Output folder.")
@click.option("--opset", type=click.IntRange(11, 21), default=17, show_default=True)
@click.option("--standard", is_flag=True, help="Also export the published networks of each family.")
def zoo(family_spec, count, seed, out, opset, standard):
    """Generate model variants of the NNLQP families (plus ViT, ConvNeXt) as ONNX files.

    Writes OUT/<family>-s<seed>-<index>.onnx and OUT/manifest.jsonl (the generating parameters).
    Existing files are kept, so an interrupted run resumes.
    """
    import warnings
    from pathlib import Path

    from narformer_tvm.fileio import write_atomically
    from narformer_tvm.measure.zoo import family_names, standard_names, variants

    warnings.filterwarnings("ignore")
    names = family_names(family_spec)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [v for f in names for v in variants(f, seed, count)]
    if standard:
        todo += [v for n, v in standard_names().items() if v.family in names]
    manifest = out_dir / "manifest.jsonl"
    written = 0
    with progress_bar() as bar, open(manifest, "a") as mf:
        task = bar.add_task("exporting", total=len(todo), status="")
        for v in todo:
            name = v.name if v.seed >= 0 else next(n for n, s in standard_names().items() if s == v)
            path = out_dir / f"{name}.onnx"
            if not path.exists():
                write_atomically(path, lambda tmp, v=v: v.export(tmp, opset=opset))
                mf.write(json.dumps({"file": path.name, "key": v.key, **v.to_dict()}) + "\n")
                mf.flush()
                written += 1
            bar.update(task, advance=1, status=path.name)
    click.echo(f"{written} new models in {out_dir} ({len(todo) - written} already there); manifest: {manifest}")


@click.command()
@click.argument("models", nargs=-1, type=click.Path(path_type=str))
@click.option("--zoo", "zoo_spec", default=None, metavar="FAMILIES",
              help="Measure zoo variants instead of (or besides) files: 'all', 'nnlqp', 'corpus' or names.")
@click.option("--count", type=click.IntRange(min=1), default=10, show_default=True, help="Zoo variants per family.")
@click.option("--seed", type=int, default=0, show_default=True, help="Zoo seed.")
@click.option("--target", type=click.Choice(["llvm", "cuda"]), default="llvm", show_default=True)
@click.option("--runtime", default="onnxruntime", show_default=True, help="A backend (see --list-runtimes).")
@click.option("--db", "db_path", type=click.Path(path_type=str), required=True,
              help="Dataset: a folder of shards (each run adds one file), or one SQLite .db file; created if missing.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Intra-op threads (0 = physical cores).")
@opt_level_option
@click.option("--kernels", is_flag=True, help="Also record per-operator durations (ONNX Runtime profiler).")
@click.option("--timeout", type=click.FloatRange(min=1), default=300, show_default=True,
              help="Seconds before a model's worker is killed and the model recorded as failed.")
@click.option("--repeat-pass", type=click.FloatRange(0, 1), default=0.0,
              help="Re-measure this fraction of the models in a second pass to measure the noise floor.")
@click.option("--repeat-round", type=click.IntRange(min=1), default=1, show_default=True,
              help="Which repeat pass --repeat-pass writes: 1, the noise-floor pass; 2, 3, ... measure the models "
                   "again on later sittings (passes repeat2, ...), averaged into --mean-passes labels.")
@click.option("--measured-between", nargs=2, default=None, metavar="START END",
              help="Only models whose main pass was measured in [START, END) (UTC ISO times, YYYY-MM-DDTHH:MM, "
                   "as `dataset sittings` lists them); with --repeat-pass 1, re-measures one sitting.")
@click.option("--regime-gate/--no-regime-gate", default=None,
              help="Measure only while a probe network shows the machine's fast regime (default: on for "
                   "multi-threaded CPU runs, whose latencies flip between two regimes on shared VMs).")
@click.option("--regime-wait", type=click.FloatRange(min=0), default=60, show_default=True, metavar="SECONDS",
              help="How long the gate waits for the fast regime before each try (3 tries, then the row is "
                   "flagged noisy).")
@click.option("--retry-failed", is_flag=True, help="Measure again models whose measurement failed.")
@click.option("--remeasure-noisy", is_flag=True, help="Measure again models flagged noisy.")
@click.option("--rpc-tracker", default="", metavar="HOST:PORT", help="TVM RPC tracker for remote devices.")
@click.option("--rpc-key", default="", help="Device key registered with the RPC tracker.")
@click.option("--ort-candidates", default=None, metavar="N|all",
              help="Also measure each model under N random `tune-ort` candidates (model variants x session "
                   "options), or all of them: training data for the configuration-aware predictor.")
@variant_option
@input_shape_option
@batch_option
def profile(models, zoo_spec, count, seed, target, runtime, db_path, threads, opt_level, kernels, timeout,
            repeat_pass, repeat_round, measured_between, regime_gate, regime_wait, retry_failed, remeasure_noisy,
            rpc_tracker, rpc_key, ort_candidates, variant, input_shapes, batch_size):
    """Measure real latencies of MODELS (ONNX files or folders) and store them in a dataset.

    Each model runs in an isolated worker with a timeout; results are committed one by one, so an
    interrupted run loses nothing and the same command resumes where it stopped.
    """
    from narformer_tvm.data.labels import noise_floor, repeat_pass_name
    from narformer_tvm.data.store import Store
    from narformer_tvm.estimate import collect_models
    from narformer_tvm.graph.onnx_graph import parse_input_shapes
    from narformer_tvm.measure.backends import MeasureConfig
    from narformer_tvm.measure.profiler import (
        Summary,
        check_config,
        env_threads_note,
        jobs_from_paths,
        jobs_from_zoo,
        repeat_subset,
        sweep,
    )
    from narformer_tvm.measure.regime_gate import gate_settings
    from narformer_tvm.measure.zoo import family_names

    if not models and not zoo_spec:
        raise click.UsageError("give ONNX files/folders, or --zoo FAMILIES")
    cfg = MeasureConfig(runtime=runtime, target=target, threads=threads, opt_level=opt_level, kernels=kernels,
                        rpc_tracker=rpc_tracker, rpc_key=rpc_key)
    check_config(cfg)
    shapes = parse_input_shapes(input_shapes)
    jobs = jobs_from_paths(collect_models(models), shapes, batch_size) if models else []
    if zoo_spec:
        jobs += jobs_from_zoo(family_names(zoo_spec), count, seed)
    if variant != "fp32":
        if ort_candidates:
            raise click.UsageError("--ort-candidates draws model variants itself: leave out --variant")
        jobs = [j.with_candidate(variant, None) for j in jobs]
    if ort_candidates:
        from narformer_tvm.integrations.ort_tuning import candidate_jobs

        if runtime != "onnxruntime":
            raise click.UsageError("--ort-candidates measures ONNX Runtime configurations: use --runtime onnxruntime")
        exhaustive = ort_candidates == "all"
        if not exhaustive and not (ort_candidates.isdigit() and int(ort_candidates) > 0):
            raise click.UsageError(f"--ort-candidates takes a positive number or 'all', not {ort_candidates!r}")
        jobs = candidate_jobs(jobs, 0 if exhaustive else int(ort_candidates), target, seed, exhaustive)
    if repeat_round > 1 and not repeat_pass:
        raise click.UsageError("--repeat-round chooses the pass --repeat-pass writes: give --repeat-pass too")
    if measured_between:
        start, end = measured_between
        if not start < end:
            raise click.BadParameter(f"START {start!r} is not before END {end!r}", param_hint="--measured-between")
        with Store(db_path, readonly=True) as existing:  # a sitting to repeat needs an existing dataset
            keys = existing.keys_measured_between(start, end)
        jobs = [j for j in jobs if j.key in keys]
        if not jobs:
            raise click.UsageError(f"no model of this selection had its main pass measured between {start} and {end} "
                                   f"in {db_path}: see `narformer-tvm dataset sittings {db_path}`")
    if note := env_threads_note():
        click.echo(f"warning: {note} is set and may change thread counts", err=True)
    con = make_console(stderr=True)
    store = Store(db_path)
    summaries = []
    try:
        repeat = repeat_pass_name(repeat_round)
        for pass_, pass_jobs in (("main", jobs), (repeat, repeat_subset(jobs, repeat_pass))):
            if not pass_jobs:
                continue
            with progress_bar() as bar:
                task = bar.add_task(f"{pass_} pass", total=len(pass_jobs), status="")

                def report(kind, i, n, msg):
                    if kind == "done":
                        bar.update(task, completed=i + (len(pass_jobs) - n), status=msg)

                summary = Summary()  # filled as the sweep goes: an interrupted pass is summarised too
                summaries.append((pass_, summary))
                sweep(pass_jobs, store, cfg, pass_, timeout, shapes, batch_size, retry_failed,
                      remeasure_noisy=remeasure_noisy, progress=report, gate=gate_settings(cfg, regime_gate, regime_wait),
                      summary=summary)
    except KeyboardInterrupt:
        con.print("[yellow]interrupted: every finished measurement is saved; run the same command to resume[/yellow]")
        raise
    finally:
        _print_summaries(con, summaries)
        if repeat_pass:
            _print_noise(con, noise_floor(store))
        store.close()
    if any(s.failed for _, s in summaries):
        sys.exit(1)


def _print_summaries(con, summaries) -> None:
    from rich.table import Table

    if not summaries:
        return
    t = Table(title="profiling summary", title_justify="left")
    for col in ("pass", "measured", "failed", "skipped (done before)", "noisy", "re-measured", "time"):
        t.add_column(col, justify="left" if col == "pass" else "right")
    for pass_, s in summaries:
        t.add_row(pass_, str(s.measured), str(s.failed), str(s.skipped), str(s.noisy), str(s.retried), f"{s.seconds:.0f} s")
    con.print(t)
    for pass_, s in summaries:
        for name, err in s.failures[:10]:
            con.print(f"  [red]failed[/red] {name}: {err}")
        if len(s.failures) > 10:
            con.print(f"  ... and {len(s.failures) - 10} more failures (see `narformer-tvm dataset info`)")
        for d in s.drift:
            con.print(f"  [yellow]drift:[/yellow] {d}")


def _print_noise(con, noise: dict | None, second: str = "repeat") -> None:
    """The floor of the main pass against ``second``; ``{}``: that pass has no pair of clean rows."""
    from rich.table import Table

    if noise is None:
        return
    if not noise:
        con.print(f"noise floor: main vs {second} pass: no model has a clean measurement in both (rows flagged "
                  "noisy are left out of the floor, as out of training)")
        return
    t = Table(title=f"noise floor: main vs {second} pass (same models)", title_justify="left")
    for col in ("statistic", "pairs", "MAPE", "p90", "max"):
        t.add_column(col, justify="left" if col == "statistic" else "right")
    for name, n in noise.items():
        t.add_row(name, str(n["pairs"]), f"{100 * n['mape']:.2f}%", f"{100 * n['p90']:.2f}%", f"{100 * n['max']:.2f}%")
    con.print(t)
