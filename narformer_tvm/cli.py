"""The ``narformer-tvm`` command line: thin wrappers over the library.

Exit codes: 0 ok, 1 runtime failure, 2 usage or bad input. Only this module turns errors into
messages and exit codes; heavy imports (torch, onnx) happen inside the commands.
"""
from __future__ import annotations

import json
import math
import sys
import time
from datetime import timedelta

import click

from . import __version__
from .errors import NarformerError

input_shape_option = click.option(
    "--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS",
    help="Fix a dynamic input shape, e.g. input=1x3x224x224 (repeatable).")
batch_option = click.option("--batch-size", type=click.IntRange(min=1), default=None,
                            help="Batch size for a symbolic leading input dimension (default 1).")


def _console(stderr: bool = False):
    from rich.console import Console
    stream = sys.stderr if stderr else sys.stdout
    # Piped output is read by people and greps alike: do not cut names at 80 columns.
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else 200)


def _si(n: float, unit: str = "") -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="narformer-tvm")
def cli():
    """Predict how fast a neural network runs on given hardware, without running it."""


@cli.command()
@click.argument("model", type=click.Path(dir_okay=True, path_type=str))
@input_shape_option
@batch_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--layers/--no-layers", default=True, help="Show the per-layer table.")
def inspect(model, input_shapes, batch_size, as_json, layers):
    """Show the operator graph of MODEL: layers, op histogram, FLOPs/MACs, parameters, memory."""
    from .features import unknown_ops
    from .graph import build_graph, parse_input_shapes

    g = build_graph(model, parse_input_shapes(input_shapes), batch_size)
    unknown = unknown_ops(g)
    summary = {"model": model, "opset": g.opset, "batch_size": g.batch_size, "nodes": len(g.nodes),
               "edges": len(g.edges), "macs": g.macs, "flops": g.flops, "params": g.params,
               "memory_bytes": g.memory, "op_histogram": dict(g.op_histogram().most_common()),
               "unknown_ops": dict(unknown)}
    if as_json:
        if layers:
            summary["layers"] = [n.to_dict() for n in g.nodes]
        click.echo(json.dumps(summary, indent=2))
        return
    from rich.table import Table

    con = _console()
    if layers:
        t = Table(title=f"{model}: layers", title_justify="left")
        for col in ("#", "name", "op", "output shape", "MACs", "params"):
            t.add_column(col, justify="right" if col in ("#", "MACs", "params") else "left")
        for i, n in enumerate(g.nodes):
            out = "x".join(map(str, n.output_shapes[0])) if n.output_shapes else ""
            t.add_row(str(i), n.name, n.op_type, out, _si(n.macs) if n.macs else "", _si(n.params) if n.params else "")
        con.print(t)
    h = Table(title="op histogram", title_justify="left")
    h.add_column("op")
    h.add_column("count", justify="right")
    for op, c in g.op_histogram().most_common():
        h.add_row(op + (" (unknown)" if op in unknown else ""), str(c))
    con.print(h)
    con.print(f"[bold]{model}[/bold]: opset {g.opset}, batch {g.batch_size}, {len(g.nodes)} layers, "
              f"{len(g.edges)} edges")
    con.print(f"  MACs {_si(g.macs)}  FLOPs {_si(g.flops)}  params {_si(g.params)}  "
              f"memory access {_si(g.memory, 'B')}")
    if unknown:
        con.print(f"  [yellow]unknown ops (encoded in the shared 'unknown' slot): "
                  f"{', '.join(f'{k} x{v}' for k, v in unknown.items())}[/yellow]")


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--predictor", "predictor_spec", metavar="PATH|PROFILE", default=None,
              help="A checkpoint file or a hardware profile name (default: the shipped ONNX Runtime CPU "
                   "profile measured on this machine's CPU, else `cpu-onnxruntime`).")
@input_shape_option
@batch_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def estimate(models, predictor_spec, input_shapes, batch_size, as_json):
    """Predict the latency of MODELS (ONNX files or folders of them)."""
    from .estimate import collect_models, estimate as run_estimate, resolve_predictor
    from .graph import parse_input_shapes
    from .predictor import Predictor

    shapes = parse_input_shapes(input_shapes)
    files = collect_models(models)
    path = resolve_predictor(predictor_spec)
    predictor = Predictor.load(path)
    from .estimate import fingerprint_mismatch

    if warning := fingerprint_mismatch(predictor):
        click.echo(f"warning: {warning}", err=True)
    results = run_estimate(files, predictor, shapes, batch_size)
    failed = [r for r in results if r.error is not None]
    if as_json:
        click.echo(json.dumps({"predictor": str(path), "profile": predictor.profile,
                               "results": [r.to_dict() for r in results]}, indent=2))
    elif len(results) == 1 and not failed:
        r = results[0]
        spread = f" ± {r.spread_ms:.3g}" if r.spread_ms else ""
        click.echo(f"{r.path}: {r.latency_ms:.3f}{spread} ms")
    else:
        from rich.table import Table

        t = Table(title=f"predicted latency ({predictor.profile.get('name', path)})", title_justify="left")
        for col, j in (("model", "left"), ("latency ms", "right"), ("± ms", "right"), ("layers", "right"),
                       ("MACs", "right")):
            t.add_column(col, justify=j)
        for r in results:
            if r.error is not None:
                t.add_row(str(r.path), "[red]error[/red]", "", "", "")
            else:
                t.add_row(str(r.path), f"{r.latency_ms:.3f}", f"{r.spread_ms:.3g}" if r.spread_ms else "",
                          str(len(r.graph.nodes)), _si(r.graph.macs))
        _console().print(t)
    for r in failed:
        _report(r.error)
    if failed:
        sys.exit(max(r.error.exit_code for r in failed))


LOG_EVERY_S = 30.0  # a progress line at most this often where stderr is a log file, not a terminal


def _progress(log_every_s: float | None = None):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    class LoggedProgress(Progress):
        """A live bar never redraws in a log file (a job in the background): there, each task's state
        is printed as a plain line instead, at most every ``log_every_s`` seconds and when it finishes."""

        def update(self, task_id, **kwargs):
            super().update(task_id, **kwargs)
            if self.console.is_terminal:
                return
            task, now = self._tasks[task_id], time.monotonic()
            if last.get(task_id) == "done":
                return
            if task.total is not None and task.completed >= task.total:
                last[task_id] = "done"
            elif now - last.get(task_id, -math.inf) < every:
                return
            else:
                last[task_id] = now
            total = f"/{task.total:g}" if task.total is not None else ""
            status = task.fields.get("status", "")
            self.console.print(f"{time.strftime('%H:%M:%S')} {task.description} {task.completed:g}{total} "
                               f"[{timedelta(seconds=int(task.elapsed or 0))}] {status}", markup=False, highlight=False)

        def advance(self, task_id, advance=1):
            self.update(task_id, advance=advance)

    every = LOG_EVERY_S if log_every_s is None else log_every_s
    last = {}
    return LoggedProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                          console=_console(stderr=True), transient=False)


def _warn_above(bar):
    """A warning printer that keeps the live progress bar intact (a results file moved aside)."""
    return lambda msg: bar.console.print(f"warning: {msg}", markup=False, highlight=False)


@cli.command()
@click.option("--family", "family_spec", default="all", show_default=True,
              help="Family name, a comma-separated list, 'nnlqp' (NNLQP's ten) or 'all'.")
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

    from .dataset import write_atomically
    from .zoo import family_names, standard_names, variants

    warnings.filterwarnings("ignore")
    names = family_names(family_spec)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [v for f in names for v in variants(f, seed, count)]
    if standard:
        todo += [v for n, v in standard_names().items() if v.family in names]
    manifest = out_dir / "manifest.jsonl"
    written = 0
    with _progress() as bar, open(manifest, "a") as mf:
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


@cli.command()
@click.argument("models", nargs=-1, type=click.Path(path_type=str))
@click.option("--zoo", "zoo_spec", default=None, metavar="FAMILIES",
              help="Measure zoo variants instead of (or besides) files: 'all', 'nnlqp' or names.")
@click.option("--count", type=click.IntRange(min=1), default=10, show_default=True, help="Zoo variants per family.")
@click.option("--seed", type=int, default=0, show_default=True, help="Zoo seed.")
@click.option("--target", type=click.Choice(["llvm", "cuda"]), default="llvm", show_default=True)
@click.option("--runtime", default="onnxruntime", show_default=True, help="A backend (see --list-runtimes).")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=str), required=True,
              help="Dataset file (SQLite), created if missing.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Intra-op threads (0 = physical cores).")
@click.option("--opt-level", type=click.Choice(["disabled", "basic", "extended", "all"]), default="all",
              show_default=True, help="ONNX Runtime graph optimisation level.")
@click.option("--kernels", is_flag=True, help="Also record per-operator durations (ONNX Runtime profiler).")
@click.option("--timeout", type=click.FloatRange(min=1), default=300, show_default=True,
              help="Seconds before a model's worker is killed and the model recorded as failed.")
@click.option("--repeat-pass", type=click.FloatRange(0, 1), default=0.0,
              help="Re-measure this fraction of the models in a second pass to measure the noise floor.")
@click.option("--repeat-round", type=click.IntRange(min=1), default=1, show_default=True,
              help="Which repeat pass --repeat-pass writes: 1, the noise-floor pass; 2, 3, ... measure the models "
                   "again on later sittings (passes repeat2, ...), averaged into --mean-passes labels.")
@click.option("--measured-between", nargs=2, default=None, metavar="START END",
              help="Only models whose main pass was measured in [START, END) (UTC ISO times as `dataset sittings` "
                   "lists them, e.g. 2026-11-30T04:18 2026-11-30T04:45); with --repeat-pass 1, re-measures one "
                   "sitting.")
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
@input_shape_option
@batch_option
def profile(models, zoo_spec, count, seed, target, runtime, db_path, threads, opt_level, kernels, timeout,
            repeat_pass, repeat_round, measured_between, regime_gate, regime_wait, retry_failed, remeasure_noisy,
            rpc_tracker, rpc_key, ort_candidates, input_shapes, batch_size):
    """Measure real latencies of MODELS (ONNX files or folders) and store them in a dataset.

    Each model runs in an isolated worker with a timeout; results are committed one by one, so an
    interrupted run loses nothing and the same command resumes where it stopped.
    """
    from .backends import MeasureConfig
    from .dataset import Store, repeat_pass_name
    from .estimate import collect_models
    from .graph import parse_input_shapes
    from .profile import (Summary, check_config, env_threads_note, gate_settings, jobs_from_paths, jobs_from_zoo,
                          noise_floor, repeat_subset, sweep)
    from .zoo import family_names

    if not models and not zoo_spec:
        raise click.UsageError("give ONNX files/folders, or --zoo FAMILIES")
    cfg = MeasureConfig(runtime=runtime, target=target, threads=threads, opt_level=opt_level, kernels=kernels,
                        rpc_tracker=rpc_tracker, rpc_key=rpc_key)
    check_config(cfg)
    shapes = parse_input_shapes(input_shapes)
    jobs = jobs_from_paths(collect_models(models), shapes, batch_size) if models else []
    if zoo_spec:
        jobs += jobs_from_zoo(family_names(zoo_spec), count, seed)
    if ort_candidates:
        from .tune_ort import candidate_jobs

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
    con = _console(stderr=True)
    store = Store(db_path)
    summaries = []
    try:
        repeat = repeat_pass_name(repeat_round)
        for pass_, pass_jobs in (("main", jobs), (repeat, repeat_subset(jobs, repeat_pass))):
            if not pass_jobs:
                continue
            with _progress() as bar:
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


@cli.group()
def dataset():
    """Inspect, export, import and merge profiling datasets."""


@dataset.command("info")
@click.argument("db", type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True)
def dataset_info(db, as_json):
    """Summary per configuration and family: models, failures, latency range, noise."""
    from .dataset import Store, dataset_summary
    from .profile import noise_floors

    with Store(db, readonly=True) as store:
        summary = dataset_summary(store)
        later = noise_floors(store)  # the noise-floor pass, then the later rounds
        noise = later.pop("repeat", None)
    if as_json:
        click.echo(json.dumps({"summary": summary, "noise_floor": noise or {}, "noise_floor_later_passes": later},
                              indent=2))
        return
    from rich.table import Table

    con = _console()
    for cfg in summary:
        t = Table(title=f"{cfg['platform']}  ({json.dumps(cfg['config'])})", title_justify="left")
        for col in ("family", "models", "failed", "noisy", "median ms", "min ms", "max ms"):
            t.add_column(col, justify="left" if col == "family" else "right")
        for fam in cfg["families"]:
            t.add_row(fam["family"], str(fam["measured"]), str(fam["failed"]), str(fam["noisy"]),
                      *(f"{fam[k]:.3f}" if fam[k] is not None else "" for k in ("median_ms", "min_ms", "max_ms")))
        con.print(t)
    _print_noise(con, noise)
    for pass_, n in later.items():
        _print_noise(con, n, pass_)


@dataset.command("sittings")
@click.argument("db", type=click.Path(dir_okay=False, path_type=str))
@click.option("--pass", "pass_", default="main", show_default=True, help="main, repeat, repeat2, ...")
@click.option("--json", "as_json", is_flag=True)
def dataset_sittings(db, pass_, as_json):
    """When the rows were measured (runs without a 20-minute pause) and how quick the regime probes ran
    against the dataset's typical level: a sitting far off it is one to measure again."""
    from .dataset import Store, is_pass_name, sittings

    if not is_pass_name(pass_):
        raise click.BadParameter(f"{pass_!r} is not a pass: main, repeat, or repeat2, repeat3, ...",
                                 param_hint="--pass")
    with Store(db, readonly=True) as store:
        found = sittings(store, pass_)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    from rich.table import Table

    t = Table(title=f"sittings of {db} ({pass_} pass)", title_justify="left")
    for col in ("config", "start (UTC)", "end", "rows", "noisy", "failed", "median probe", "vs typical"):
        t.add_column(col, justify="right")
    for sit in found:
        probe = f"{sit['probe_ms']:.4f} ms" if sit["probe_ms"] else "-"
        off = f"{100 * sit['probe_vs_typical']:+.1f}%" if sit["probe_vs_typical"] is not None else "-"
        t.add_row(str(sit["config_id"]), sit["start"], sit["end"], str(sit["rows"]), str(sit["noisy"]),
                  str(sit["failed"]), probe, off)
    _console().print(t)
    click.echo("to measure one sitting again: narformer-tvm profile ... --measured-between START END --repeat-pass 1")


@dataset.command("export")
@click.argument("db", type=click.Path(dir_okay=False, path_type=str))
@click.option("--format", "fmt", type=click.Choice(["nnlqp", "csv", "parquet"]), default="csv", show_default=True)
@click.option("--out", type=click.Path(path_type=str), required=True)
@click.option("--write-onnx", type=click.Path(file_okay=False, path_type=str), default=None,
              help="With nnlqp: write zoo models' ONNX files here (they are regenerated from their parameters).")
def dataset_export(db, fmt, out, write_onnx):
    """Export measurements as NNLQP gt.txt, CSV or Parquet."""
    from .dataset import Store, export_csv, export_nnlqp, export_parquet

    with Store(db, readonly=True) as store:
        n = {"csv": export_csv, "parquet": export_parquet}[fmt](store, out) if fmt != "nnlqp" else \
            export_nnlqp(store, out, write_onnx)
    click.echo(f"{n} rows written to {out}")


@dataset.command("import")
@click.argument("db", type=click.Path(dir_okay=False, path_type=str))
@click.argument("gt", type=click.Path(dir_okay=False, path_type=str))
@click.option("--onnx-root", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Folder the OnnxPath column is relative to (default: the gt file's folder).")
def dataset_import(db, gt, onnx_root):
    """Import an NNLQP gt.txt file (GraphID OnnxPath BatchSize Latency(ms) ModelType PlatformId [split])."""
    from .dataset import Store, import_nnlqp

    with Store(db) as store:
        n, errors = import_nnlqp(store, gt, onnx_root)
    click.echo(f"{n} measurements imported into {db}")
    for line, err in errors[:10]:
        click.echo(f"  skipped line {line}: {err}", err=True)
    if errors:
        sys.exit(1)


@dataset.command("regraph")
@click.argument("db", type=click.Path(dir_okay=False, path_type=str))
@click.option("--family", "families", multiple=True, help="Only these families (repeatable; default all).")
def dataset_regraph(db, families):
    """Re-extract stored graphs with this version's ONNX analysis (zoo variants are exported again;
    files are read from their path). Run it after a fix to graph extraction, then retrain."""
    from .dataset import Store
    from .profile import regraph

    with Store(db, create=False) as store, _progress() as bar:
        task = bar.add_task("regraph", total=None, status="")
        counts = regraph(store, list(families) or None,
                         lambda i, n, name: bar.update(task, completed=i, total=n, status=name))
    click.echo(f"{counts['checked']} graphs checked: {counts['changed']} changed, {counts['failed']} no longer "
               f"extract (their measurements are now failures), {counts['missing']} left as they were (file gone, "
               "or it needs the --input-shape it was profiled with)")
    for name in counts["names_failed"][:20]:
        click.echo(f"  no graph: {name}")


@dataset.command("merge")
@click.argument("out", type=click.Path(dir_okay=False, path_type=str))
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
def dataset_merge(out, sources):
    """Merge datasets (e.g. profiled on several machines) into OUT."""
    from .dataset import Store, merge

    with Store(out) as dst:
        for src in sources:
            with Store(src, readonly=True) as s:
                added = merge(dst, s)
            click.echo(f"{src}: {added} measurements added")


class SeedList(click.ParamType):
    """A seed count N -> [0, ..., N-1]; or seeds listed and ranged, "1,3" or "3-4" -> those seeds.
    With ``count=False`` a lone number is that one index (ensemble members: "2" -> [2])."""

    name = "N|SEEDS"

    def __init__(self, count: bool = True):
        self.count = count
        if not count:
            self.name = "INDICES"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        text = str(value).replace(" ", "")
        try:
            if self.count and text.isdigit():
                if int(text) < 1:
                    raise ValueError
                return list(range(int(text)))
            seeds = []
            for part in text.split(","):
                lo, dash, hi = part.partition("-")
                lo, hi = int(lo), int(hi) if dash else int(lo)
                if lo < 0 or hi < lo:
                    raise ValueError
                seeds += [s for s in range(lo, hi + 1) if s not in seeds]
            return seeds
        except ValueError:
            if not self.count:
                self.fail(f"{value!r} is not a list or range of indices (2, 0,2 or 1-2)", param, ctx)
            self.fail(f"{value!r} is neither a seed count (5) nor a list or range of seeds (1,3 or 3-4; "
                      "one seed alone: 2-2)", param, ctx)


def _model_options(f):
    opts = [
        click.option("--d-model", type=click.IntRange(min=8), default=None, help="Hidden width (default 512)."),
        click.option("--layers", type=click.IntRange(min=1), default=None, help="Blocks (default 2)."),
        click.option("--groups", type=click.IntRange(min=1), default=None, help="GFFN groups (default 8)."),
        click.option("--backbone", type=click.Choice(["transformer", "gnn"]), default=None),
        click.option("--readout", type=click.Choice(["sum", "node_cost", "flops_mac", "roofline", "by_kind"]), default=None,
                     help="sum: the paper's sum of node embeddings -> head; node_cost: sum of per-operator costs; "
                          "flops_mac: corrects a FLOPs + memory-access line; roofline: that line per operator; "
                          "by_kind: corrects a line with FLOPs and bytes rates per operator kind."),
        click.option("--no-graph-attention", is_flag=True, help="Ablation: plain self-attention."),
        click.option("--no-gffn", is_flag=True, help="Ablation: plain feed-forward network."),
        click.option("--no-type-enhance", is_flag=True, help="Ablation: no degree gate."),
        click.option("--op-encoding", type=click.Choice(["onehot", "sinusoidal"]), default=None),
        click.option("--attr-encoding", type=click.Choice(["sinusoidal", "raw"]), default=None),
        # Defaults differ per task (latency: FitConfig, accuracy: AccuracyOptions): None = the task's own.
        click.option("--epochs", type=click.IntRange(min=1), default=None,
                     help="Maximum epochs (latency default 100, accuracy 300)."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Peak learning rate (latency default 1e-3, accuracy 1e-4)."),
        click.option("--batch-size", "train_batch", type=click.IntRange(min=1), default=None, help="Default 32."),
        click.option("--patience", type=click.IntRange(min=1), default=None,
                     help="Early stopping: epochs without validation improvement (latency default 15, accuracy 60)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--include-noisy", is_flag=True, help="Also use measurements flagged noisy (left out by default)."),
        click.option("--regime-correction/--no-regime-correction", default=None,
                     help="Divide each gated label by how much slower than the fast regime the probes around it "
                          "ran (dataset.regime_factor; the default), or train and score on the raw latencies. "
                          "evaluate --predictor: default, the labels that predictor learned."),
        click.option("--sitting-level/--no-sitting-level", default=None,
                     help="With the regime correction, take each sitting's whole level out in full "
                          "(dataset.sitting_factor: the sitting's median probe over the typical one, then the "
                          "row's probe within its sitting to the usual power), for sittings that ran off the "
                          "usual level. evaluate --predictor: default, the labels that predictor learned."),
        click.option("--mean-passes/--main-pass-only", default=None,
                     help="Label a model measured more than once (clean repeat-pass rows besides its main one) by "
                          "the geometric mean of its passes, or by its main pass alone (train's default). evaluate "
                          "--predictor: default, the labels that predictor learned."),
        click.option("--loss", type=click.Choice(["relative", "log"]), default="relative", show_default=True,
                     help="relative: |pred - y| / y (MAPE); log: squared error of log latencies."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _regime_correct(kw: dict, learned: bool | str = True) -> bool | str:
    """load_samples' ``regime_correct`` from --regime-correction and --sitting-level; where neither is
    given, ``learned`` (what a scored predictor learned; train's default: the regime correction)."""
    on, sitting = kw["regime_correction"], kw["sitting_level"]
    if on is False:
        if sitting:
            raise click.UsageError("--sitting-level refines the regime correction: drop --no-regime-correction")
        return False
    if on is None and sitting is None:
        return learned
    return "sitting" if (learned == "sitting" if sitting is None else sitting) else True


def _train_options(kw) -> tuple:
    from .train import FitConfig

    for name, flag, _ in CELL_ONLY:
        if kw.get(name) is not None:
            raise click.UsageError(f"{flag} applies to the accuracy task (cell training) only")
    model = {k: v for k, v in (("d_model", kw["d_model"]), ("n_layers", kw["layers"]), ("n_groups", kw["groups"]),
                                ("backbone", kw["backbone"]), ("readout", kw["readout"])) if v is not None}
    if kw["no_graph_attention"]:
        model["graph_attention"] = False
    if kw["no_gffn"]:
        model["gffn"] = False
    if kw["no_type_enhance"]:
        model["type_enhance"] = False
    feats = {k: v for k, v in (("op_encoding", kw["op_encoding"]), ("attr_encoding", kw["attr_encoding"])) if v}
    fit = FitConfig(**_given(kw), seed=kw["seed"], loss=kw["loss"])
    return model, feats, fit


def _given(kw) -> dict:
    """The training-loop options set on the command line (the others keep the task's defaults)."""
    names = {"epochs": "epochs", "lr": "lr", "train_batch": "batch_size", "patience": "patience"}
    return {field: kw[opt] for opt, field in names.items() if kw[opt] is not None}


task_options = [
    click.option("--task", type=click.Choice(["latency", "accuracy", "ort-configs"]), default="latency",
                 show_default=True, help="latency: whole networks; accuracy: NAS cells; ort-configs: the "
                 "configuration-aware predictor behind `tune-ort`."),
    click.option("--benchmark", type=click.Choice(["nb201", "nb101"]), default=None,
                 help="accuracy task: the cell benchmark."),
    click.option("--data", "data_path", type=click.Path(dir_okay=False, path_type=str), default=None,
                 help="accuracy task: ../shared/data/nasbench201_accuracy.csv or nasbench101_1k.json."),
    click.option("--train-size", type=click.IntRange(min=2), default=None,
                 help="accuracy task: training cells (NB201: 781 = 5%, 1563 = 10%; NB101 subset: 100, 424)."),
    click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=None,
                 help="accuracy task: training matmuls in bf16 (default auto: where the CPU has native bf16)."),
    click.option("--ema", type=click.FloatRange(0, 1, max_open=True), default=None,
                 help="accuracy task: validate and keep a moving average of the weights with this decay (0: off)."),
    click.option("--layer-fusion/--no-layer-fusion", default=None,
                 help="accuracy task: weight each block's readout by a learned gate (the paper's fusion, the "
                      "default) or sum them."),
    click.option("--block", type=click.Choice(["prenorm", "l2"]), default=None,
                 help="accuracy task: l2 (default): the reference code's block, the attention output L2-normalised "
                      "and ReLU'd, no attention residual; prenorm: residual attention and GFFN after LayerNorm."),
    click.option("--loss-form", type=click.Choice(["logistic", "reference"]), default=None,
                 help="accuracy task: logistic (default): logistic pairwise loss, squared relative consistency "
                      "gap; reference: the reference code's L1 of shuffled-pair differences and L1 consistency gap."),
    click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None,
                 help="accuracy task: dropout rate in every block (default 0.1; the reference code's 0.05)."),
    click.option("--n-freqs", type=click.IntRange(min=1), default=None,
                 help="accuracy task: frequencies of the sinusoidal node-position code (default 16)."),
    click.option("--gffn-norm/--no-gffn-norm", default=None,
                 help="accuracy task: the reference code's GFFN, a LayerNorm per group after each group linear "
                      "layer and ReLU between them (default: off, GELU)."),
    click.option("--enhance-first/--no-enhance-first", default=None,
                 help="accuracy task: the reference code's order, the degree gate (type-aware enhancement) on "
                      "each block's input rather than its output (default: output)."),
    click.option("--readout-norm/--no-readout-norm", default=None,
                 help="accuracy task: LayerNorm each node before summing a block's readout (default), or take "
                      "the mean of the raw node embeddings, as the reference code does."),
    click.option("--head", type=click.Choice(["gelu", "reference"]), default=None,
                 help="accuracy task: reference (default): the reference code's two hidden layers of the model "
                      "width, ReLU and dropout 0.05; gelu: one hidden layer of width/2, GELU (the default before "
                      "2026-11-29 16:00)."),
    click.option("--rank-weight", type=click.FloatRange(min=0), default=None,
                 help="accuracy task: weight of the pairwise term (default 1; the reference code's 0.1)."),
    click.option("--consistency-weight", type=click.FloatRange(min=0), default=None,
                 help="accuracy task: weight of the isomorphism-consistency term (default 0.1; the reference's 0.5)."),
]

# (click parameter, flag as shown, AccuracyOptions field) of the task options that only cell training reads
CELL_ONLY = (("precision", "--precision", "precision"), ("ema", "--ema", "ema"),
             ("layer_fusion", "--layer-fusion/--no-layer-fusion", "fusion"), ("block", "--block", "block"),
             ("loss_form", "--loss-form", "loss_form"), ("rank_weight", "--rank-weight", "rank_weight"),
             ("consistency_weight", "--consistency-weight", "consistency_weight"), ("dropout", "--dropout", "dropout"),
             ("n_freqs", "--n-freqs", "n_freqs"), ("gffn_norm", "--gffn-norm/--no-gffn-norm", "gffn_norm"),
             ("enhance_first", "--enhance-first/--no-enhance-first", "enhance_first"),
             ("readout_norm", "--readout-norm/--no-readout-norm", "readout_norm"), ("head", "--head", "head"))


def _task_options(f):
    for o in reversed(task_options):
        f = o(f)
    return f


def _accuracy_args(db_path, benchmark, data_path, train_size):
    if db_path:
        raise click.UsageError("--db is for the latency task; the accuracy task reads --data")
    if not (benchmark and data_path and train_size):
        raise click.UsageError("the accuracy task needs --benchmark, --data and --train-size")


def _accuracy_opts(kw):
    from .nas import AccuracyOptions, resolved

    o = {k: v for k, v in (("d_model", kw["d_model"]), ("n_layers", kw["layers"]), ("n_groups", kw["groups"]),
                            ("backbone", kw["backbone"])) if v is not None}
    o.update({field: kw[name] for name, _, field in CELL_ONLY if kw[name] is not None})
    return resolved(AccuracyOptions(**o, **_given(kw), seed=kw["seed"]))  # unset precision: the default, auto


@cli.command()
@_task_options
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=str), default=None,
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
@_model_options
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

    from .predictor import Predictor
    from .train import TrainOptions, carve_validation, load_samples, split_same_distribution, train_predictor

    model, feats, fit = _train_options(kw)
    samples, cfg = load_samples(db_path, runtime, target, include_noisy=kw["include_noisy"],
                                regime_correct=_regime_correct(kw), mean_passes=bool(kw["mean_passes"]))
    train_idx, test_idx = split_same_distribution(samples) if split == "same" else (list(range(len(samples))), [])
    if limit:
        train_idx = sorted(np.random.default_rng(kw["seed"]).permutation(train_idx)[:limit].tolist())
    tr, val = carve_validation(train_idx, 0.1, kw["seed"])
    init = Predictor.load(finetune) if finetune else None
    opts = TrainOptions(model=model, features=feats, fit=fit, ensemble=ensemble)
    con = _console(stderr=True)
    con.print(f"{len(samples)} samples ({len(tr)} train, {len(val)} validation, {len(test_idx)} test) from "
              f"{db_path} [{json.dumps(cfg['config'])}]")
    if recalibrate:
        from .train import recalibrate as rescale

        pred = rescale(init, [samples[i] for i in tr + val])
        con.print(f"{finetune} recalibrated: predictions x {pred.metadata['recalibrated']['factor']:.4f}")
    else:
        with _progress() as bar:
            task = bar.add_task("training", total=None, status="")
            pred = train_predictor([samples[i] for i in tr], [samples[i] for i in val], opts, checkpoint=out,
                                   progress=lambda msg: bar.update(task, status=msg), init=init, members=members)
    if pred is None:
        click.echo(f"ensemble member{'s' if len(members) > 1 else ''} {', '.join(map(str, members))} of {ensemble} "
                   f"trained; {out} is written by the run that finishes the last member (or rerun without --members)")
        return
    pred.profile = _dataset_profile(cfg, db_path)
    if m := _test_metrics(pred, samples, test_idx):
        con.print(f"test ({len(test_idx)} held-out models): MAPE {100 * m['mape']:.2f}%  RMSPE {100 * m['rmspe']:.2f}%  "
                  f"Acc(10%) {100 * m['acc10']:.1f}%  Acc(5%) {100 * m['acc5']:.1f}%  tau {m['kendall_tau']:.3f}")
    pred.save(out)
    took = "recalibrated" if recalibrate else f"{pred.metadata['train_seconds']} s"
    click.echo(f"predictor written to {out} ({took})")
    if profile_dir:
        from .estimate import write_profile

        click.echo(f"hardware profile written to {write_profile(pred, profile_dir)}")


def _dataset_profile(cfg: dict, db_path) -> dict:
    """A trained latency predictor's profile: the measuring configuration and machine of its dataset."""
    return {"runtime": cfg["config"]["runtime"], "target": cfg["config"]["target"],
            "threads": cfg["config"].get("threads"), "config": cfg["config"], "fingerprint": cfg["fingerprint"],
            "dataset": str(db_path), "labels": cfg["labels"]}


def _test_metrics(pred, samples, test_idx) -> dict | None:
    """Metrics of a trained predictor on the held-out samples, recorded in its metadata."""
    from .evaluate import score_predictor

    if not test_idx:
        return None
    pred.metadata["test"] = score_predictor(pred, [samples[i] for i in test_idx], "test").metrics()
    return pred.metadata["test"]


def _train_ort_configs(db_path, target, out, split, ensemble, finetune, profile_dir, kw):
    from .estimate import resolve_predictor
    from .predictor import Predictor
    from .train import TrainOptions
    from .tune_ort import load_config_samples, split_by_source, train_config_predictor

    _, _, fit = _train_options(kw)
    samples = load_config_samples(db_path, target, include_noisy=kw["include_noisy"])
    train_idx, test_idx = split_by_source(samples) if split == "same" else (list(range(len(samples))), [])
    base_path = resolve_predictor(finetune)
    base = Predictor.load(base_path)
    con = _console(stderr=True)
    con.print(f"{len(samples)} measurements under {len({s.candidate for s in samples})} configurations "
              f"({len(train_idx)} train+validation, {len(test_idx)} test) from {db_path}; starting from {base_path}")
    with _progress() as bar:
        task = bar.add_task("training", total=None, status="")
        pred = train_config_predictor(samples, base, train_idx, TrainOptions(fit=fit), ensemble, checkpoint=out,
                                      progress=lambda msg: bar.update(task, status=msg))
    if m := _test_metrics(pred, samples, test_idx):
        con.print(f"test ({len(test_idx)} rows of held-out models): MAPE {100 * m['mape']:.2f}%  "
                  f"Acc(10%) {100 * m['acc10']:.1f}%  tau {m['kendall_tau']:.3f}")
    pred.save(out)
    click.echo(f"configuration-aware predictor written to {out} ({pred.metadata['train_seconds']} s)")
    if profile_dir:
        from .estimate import add_to_profile

        click.echo(f"hardware profile updated: {add_to_profile(profile_dir, 'ort_configs', out)}")


@cli.command("tune-ort")
@click.argument("model", type=click.Path(path_type=str))
@click.option("--target", type=click.Choice(["llvm", "cuda"]), default="llvm", show_default=True)
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True,
              help="Measure this many best-predicted candidates (plus uncertain ones and the default).")
@click.option("--explore", type=click.IntRange(min=0), default=2, show_default=True,
              help="At most this many extra candidates whose uncertain prediction could still be the best.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=str), required=True,
              help="Folder for session_options.json, the chosen model variant and the measurements.")
@click.option("--predictor", "predictor_spec", default=None,
              help="A configuration-aware predictor (.pt) or a hardware profile name (default: cpu-onnxruntime).")
@input_shape_option
@batch_option
def tune_ort_cmd(model, target, top_k, explore, out_dir, predictor_spec, input_shapes, batch_size):
    """Pick the fastest ONNX Runtime configuration of MODEL by prediction, measuring only the best few.

    Candidates: the original model, ONNX Runtime's optimised graph, dynamic and static (QDQ) int8
    quantisation (fp16 on CUDA), each under every intra-op thread count, execution mode and graph
    optimisation level. Writes session_options.json (load it with narformer_tvm.tune_ort.open_session).
    """
    from rich.table import Table

    from .estimate import resolve_ort_predictor
    from .graph import load_model, parse_input_shapes
    from .predictor import Predictor
    from .profile import check_config
    from .backends import MeasureConfig
    from .tune_ort import tune_ort

    shapes = parse_input_shapes(input_shapes)
    load_model(model, shapes, batch_size)  # a bad file fails here, with its name, before any work
    check_config(MeasureConfig(target=target))
    pred = Predictor.load(resolve_ort_predictor(predictor_spec))
    with _progress() as bar:
        task = bar.add_task("measuring the chosen candidates", total=None, status="")
        result = tune_ort(model, pred, out_dir, top_k, explore, target, shapes, batch_size,
                          progress=lambda kind, i, n, msg: bar.update(task, completed=i, total=n, status=msg))
    t = Table(title=f"tune-ort: {model} ({len(result.ranked)} candidates predicted, {len(result.measured)} measured)",
              title_justify="left")
    for col in ("candidate", "why measured", "predicted ms", "measured ms", "speedup vs default"):
        t.add_column(col, justify="left" if col in ("candidate", "why measured") else "right")
    ref = result.default.measured_ms if result.default else None
    for r in sorted(result.measured, key=lambda r: r.measured_ms or float("inf")):
        best = " [bold green]<- best[/bold green]" if r is result.best else ""
        t.add_row(r.candidate.label + best, r.reason, f"{r.predicted_ms:.3f}",
                  f"{r.measured_ms:.3f}" if r.measured_ms else f"failed: {r.error}",
                  f"{ref / r.measured_ms:.2f}x" if ref and r.measured_ms else "-")
    _console().print(t)
    if result.best is None:
        raise NarformerError("no candidate could be measured", hint=f"see {out_dir}/measurements.db")
    for kind, path in result.files.items():
        click.echo(f"{kind}: {path}")


@cli.command()
@_task_options
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=str), default=None)
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
@_model_options
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
    from .dataset import Store
    from pathlib import Path

    from .evaluate import cap_per_family, evaluate as run_eval, method_names, write_report
    from .backends import LABEL_STATISTIC
    from .estimate import labels_corrected
    from .profile import REGIME_CORRECTED, SITTING_CORRECTED, noise_floors
    from .train import load_samples

    model, feats, fit = _train_options(kw)
    if feats:
        raise click.UsageError("--op-encoding/--attr-encoding are set per method in evaluate (see ablations)")
    regime_correct, mean_passes = _regime_correct(kw), kw["mean_passes"]
    if predictor_spec is not None:
        from .estimate import label_options, resolve_predictor
        from .predictor import Predictor

        scored = Predictor.load(resolve_predictor(predictor_spec))
        learned = label_options(scored.profile)
        regime_correct = _regime_correct(kw, learned["regime_correct"])
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
        from .evaluate import score_predictor
        from .train import split_same_distribution

        if test_split:
            samples = [samples[i] for i in split_same_distribution(samples)[1]]
        results = [score_predictor(scored, samples, "predictor")]
        which = "the held-out models (each family's last 10%)" if test_split else "every model"
        title = f"predictor {predictor_spec} on {which} of {db_path} ({cfg['labels']} labels)"
        path = write_report(results, out, title, nf, command, later_nf)
        click.echo(path.read_text())
        click.echo(f"report: {path}")
        return

    def keep(result, pred):
        pred.profile = _dataset_profile(cfg, db_path)
        pred.metadata["test"] = result.metrics()
        pred.metadata["evaluated"] = {"protocol": result.protocol, "run": result.run, "split": result.split}
        pred.save(Path(out) / "predictors" / f"{result.method}-run{result.run}-{result.split}.pt")

    with _progress() as bar:
        task = bar.add_task(f"evaluating ({protocol})", total=None, status="")
        Path(out).mkdir(parents=True, exist_ok=True)  # finished splits are kept there: a rerun resumes
        results = run_eval(samples, protocol, method_names(methods_spec), runs, fit, model,
                           progress=lambda msg: bar.update(task, status=msg[-110:]),
                           checkpoint=Path(out) / "finished.json", notice=_warn_above(bar),
                           hold_out=[f.strip() for f in hold_out.split(",") if f.strip()] if hold_out else None,
                           on_trained=keep if save_predictors else None)
    path = write_report(results, out, f"{protocol} split on {db_path} ({cfg['labels']} labels)", nf, command, later_nf)
    click.echo(path.read_text())
    click.echo(f"report: {path}")


def _train_accuracy(benchmark, data_path, train_size, out, kw):
    import numpy as np

    from .cells import load_benchmark
    from .nas import VALIDATION_CELLS, protocol_split, save_cell_predictor, train_accuracy

    _accuracy_args(None, benchmark, data_path, train_size)
    opts = _accuracy_opts(kw)
    data = load_benchmark(benchmark, data_path)
    tr, va = protocol_split(len(data.cells), train_size, VALIDATION_CELLS[benchmark], opts.seed)
    with _progress() as bar:
        task = bar.add_task("training", total=None, status="")
        model, history = train_accuracy([data.cells[i] for i in tr], data.accuracy[tr], [data.cells[i] for i in va],
                                        data.accuracy[va], opts, lambda m: bar.update(task, status=m))
    from .metrics import kendall_tau, spearman
    from .nas import calibrate, held_out, predict_cells

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


@cli.command()
@click.option("--data", "data_path", type=click.Path(dir_okay=False, path_type=str), required=True,
              help="NAS-Bench-201 accuracy table (../shared/data/nasbench201_accuracy.csv).")
@click.option("--accuracy-predictor", type=click.Path(dir_okay=False, path_type=str), required=True,
              help="A cell accuracy predictor from `train --task accuracy --benchmark nb201`.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=str), required=True,
              help="Latency dataset for the cells' networks (created or extended; resumable).")
@click.option("--sample", type=click.IntRange(min=20), default=300, show_default=True,
              help="Cells measured to train the cell-latency predictor.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=str), required=True, help="Report folder.")
def nas(data_path, accuracy_predictor, db_path, sample, seed, out):
    """Accuracy/latency Pareto front of all NAS-Bench-201 cells on this machine: predicted, then the
    front measured (cells inside NAS-Bench-201's CIFAR network, ONNX Runtime, CPU)."""
    from pathlib import Path

    from rich.table import Table

    from .cells import load_nb201
    from .nas import load_cell_predictor, nas_pareto, write_pareto_report

    data = load_nb201(data_path)
    model, opts, state = load_cell_predictor(accuracy_predictor)
    with _progress() as bar:
        task = bar.add_task("nas", total=None, status="")
        result = nas_pareto(data, model, opts, db_path, sample, seed, progress=lambda m: bar.update(task, status=m),
                            calibration=state.get("calibration"))
    t = Table(title=f"predicted Pareto front ({len(result.front)} of {len(result.archs)} cells), fastest first",
              title_justify="left")
    for col in ("cell", "predicted acc", "table acc", "predicted ms", "measured ms"):
        t.add_column(col, justify="left" if col == "cell" else "right")
    for i in result.front:
        m = result.measured_ms.get(result.archs[i])
        t.add_row(result.archs[i], f"{100 * result.predicted_accuracy[i]:.2f}%", f"{100 * result.table_accuracy[i]:.2f}%",
                  f"{result.predicted_ms[i]:.3f}", f"{m:.3f}" if m else "failed")
    _console().print(t)
    click.echo(f"report: {write_pareto_report(result, Path(out))}")


def _evaluate_accuracy(benchmark, data_path, train_size, seeds, methods_spec, out, kw, db_path):
    from dataclasses import replace as dc_replace
    from pathlib import Path

    import numpy as np

    from .cells import load_benchmark
    from .nas import VALIDATION_CELLS, run_protocol

    _accuracy_args(db_path, benchmark, data_path, train_size)
    opts = _accuracy_opts(kw)
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
    with _progress() as bar:
        task = bar.add_task("evaluating", total=len(methods) * len(seeds), status="")
        for m in methods:
            o = dc_replace(opts, backbone="gnn" if m == "gnn" else opts.backbone)
            rows = []
            for seed in seeds:  # each finished seed is kept in <method>.json: a rerun resumes
                rows += run_protocol(data, train_size, [seed], o, VALIDATION_CELLS[benchmark],
                                     lambda msg, m=m, s=seed: bar.update(task, status=f"{m} seed {s}: {msg}"),
                                     checkpoint=out_dir / f"{m}.json",
                                     notice=_warn_above(bar))
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


@cli.command()
@click.argument("model", type=click.Path(path_type=str))
@click.option("--target", type=click.Choice(["llvm"]), default="llvm", show_default=True)
@click.option("--trials", type=click.IntRange(min=1), default=64, show_default=True,
              help="Total trials, split evenly over the model's tasks.")
@click.option("--cost-model", type=click.Choice(["narformer", "xgb", "random"]), default="narformer", show_default=True)
@click.option("--pretrained", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="narformer: start from a cost model saved earlier (tunedb pretrain, or a previous tune).")
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
@input_shape_option
def tune(model, target, trials, cost_model, pretrained, frozen, predict_only, measure_top, work_dir, threads, seed,
         input_shapes):
    """Tune MODEL's TVM tasks with a cost model; report tuned vs untuned latency."""
    from rich.table import Table

    from .graph import parse_input_shapes
    from .tune import tune_onnx

    extra = {}
    if cost_model == "narformer":
        extra = {"pretrained": pretrained, "frozen": frozen}
    elif pretrained or frozen or predict_only:
        raise click.UsageError("--pretrained/--frozen/--predict-only apply to --cost-model narformer")
    if predict_only and not pretrained:
        raise click.UsageError("--predict-only needs --pretrained (a cost model trained with `tunedb pretrain`)")
    with _progress() as bar:
        task = bar.add_task("tuning", total=None, status="")
        report = tune_onnx(model, work_dir, trials, cost_model, threads, parse_input_shapes(input_shapes), seed, extra,
                           progress=lambda m: bar.update(task, status=m), predict_only=predict_only,
                           measure_top_n=measure_top)
    t = Table(title=f"{model}: {cost_model}, {trials} trials", title_justify="left")
    for col in ("task", "weight", "trials", "best us", "time s", "status"):
        t.add_column(col, justify="left" if col in ("task", "status") else "right")
    for r in report.tasks:
        t.add_row(r.name, str(r.weight), str(r.trials), f"{r.best_us:.2f}" if r.best_us else "", f"{r.seconds:.0f}",
                  "[red]" + r.error + "[/red]" if r.error else "ok")
    _console().print(t)
    cm_s = sum(report.cost_model_seconds.values())
    click.echo(f"untuned {report.untuned_ms:.4f} ms, tuned {report.tuned_ms:.4f} ms "
               f"(x{report.untuned_ms / report.tuned_ms:.2f}); tuning {report.tuning_seconds:.0f} s, of which cost model "
               f"{cm_s:.1f} s; database in {work_dir}")
    if report.measured is not None:
        click.echo(f"predict-only: {sum(r.trials for r in report.tasks)} schedules explored by prediction, "
                   f"{report.measured} built and measured")
    if any(r.error for r in report.tasks):
        sys.exit(1)


@cli.group()
def tunedb():
    """Tensor-program tuning records: pre-train the cost model offline."""


@tunedb.command("pretrain")
@click.argument("work_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=str))
@click.option("--out", type=click.Path(dir_okay=False, path_type=str), required=True)
@click.option("--steps", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def tunedb_pretrain(work_dirs, out, steps, seed):
    """Train the NAR-Former cost model on MetaSchedule databases in WORK_DIRS (from `tune` runs)."""
    from .tvm import NARFormerCostModel

    cm = NARFormerCostModel(seed=seed)
    n = cm.pretrain(list(work_dirs), steps)
    if not n:
        raise click.ClickException("no tuning records found")
    cm.save(out)
    click.echo(f"{n} records from {len(work_dirs)} databases; cost model written to {out}")


def _report(err: NarformerError) -> None:
    click.echo(f"error: {err.message}", err=True)
    if err.hint:
        click.echo(f"  hint: {err.hint}", err=True)


def _terminate(signum, frame):
    raise KeyboardInterrupt  # `kill` (or a batch system's stop) ends a run as Ctrl-C does: saved, resumable


def main(argv: list[str] | None = None) -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        rv = cli.main(args=argv, prog_name="narformer-tvm", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except NarformerError as e:
        _report(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
