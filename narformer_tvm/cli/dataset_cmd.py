"""``dataset``: summaries, sittings, export, import, merge and re-extraction of datasets."""
from __future__ import annotations

import json
import sys

import click

from narformer_tvm.cli.profile_cmd import _print_noise
from narformer_tvm.cli.ui import make_console, progress_bar


@click.group()
def dataset():
    """Inspect, export, import and merge profiling datasets."""


@dataset.command("info")
@click.argument("db", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True)
def dataset_info(db, as_json):
    """Summary per configuration and family: models, failures, latency range, noise."""
    from narformer_tvm.data.interchange import dataset_summary
    from narformer_tvm.data.labels import noise_floors
    from narformer_tvm.data.store import Store

    with Store(db, readonly=True) as store:
        summary = dataset_summary(store)
        later = noise_floors(store)  # the noise-floor pass, then the later rounds
        noise = later.pop("repeat", None)
    if as_json:
        click.echo(json.dumps({"summary": summary, "noise_floor": noise or {}, "noise_floor_later_passes": later},
                              indent=2))
        return
    from rich.table import Table

    con = make_console()
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
@click.argument("db", type=click.Path(path_type=str))
@click.option("--pass", "pass_", default="main", show_default=True, help="main, repeat, repeat2, ...")
@click.option("--json", "as_json", is_flag=True)
def dataset_sittings(db, pass_, as_json):
    """When the rows were measured (runs without a 20-minute pause) and how quick the regime probes ran
    against the dataset's typical level: a sitting far off it is one to measure again."""
    from narformer_tvm.data.labels import is_pass_name, sittings
    from narformer_tvm.data.store import Store

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
    make_console().print(t)
    click.echo("to measure one sitting again: narformer-tvm profile ... --measured-between START END --repeat-pass 1")


@dataset.command("export")
@click.argument("db", type=click.Path(path_type=str))
@click.option("--format", "fmt", type=click.Choice(["nnlqp", "csv", "parquet"]), default="csv", show_default=True)
@click.option("--out", type=click.Path(path_type=str), required=True)
@click.option("--write-onnx", type=click.Path(file_okay=False, path_type=str), default=None,
              help="With nnlqp: write zoo models' ONNX files here (they are regenerated from their parameters).")
def dataset_export(db, fmt, out, write_onnx):
    """Export measurements as NNLQP gt.txt, CSV or Parquet."""
    from narformer_tvm.data.interchange import export_csv, export_nnlqp, export_parquet
    from narformer_tvm.data.store import Store

    with Store(db, readonly=True) as store:
        n = {"csv": export_csv, "parquet": export_parquet}[fmt](store, out) if fmt != "nnlqp" else \
            export_nnlqp(store, out, write_onnx)
    click.echo(f"{n} rows written to {out}")


@dataset.command("import")
@click.argument("db", type=click.Path(path_type=str))
@click.argument("gt", type=click.Path(dir_okay=False, path_type=str))
@click.option("--onnx-root", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Folder the OnnxPath column is relative to (default: the gt file's folder).")
def dataset_import(db, gt, onnx_root):
    """Import an NNLQP gt.txt file (GraphID OnnxPath BatchSize Latency(ms) ModelType PlatformId [split])."""
    from narformer_tvm.data.interchange import import_nnlqp
    from narformer_tvm.data.store import Store

    with Store(db) as store:
        n, errors = import_nnlqp(store, gt, onnx_root)
    click.echo(f"{n} measurements imported into {db}")
    for line, err in errors[:10]:
        click.echo(f"  skipped line {line}: {err}", err=True)
    if errors:
        sys.exit(1)


@dataset.command("regraph")
@click.argument("db", type=click.Path(path_type=str))
@click.option("--family", "families", multiple=True, help="Only these families (repeatable; default all).")
def dataset_regraph(db, families):
    """Re-extract stored graphs with this version's ONNX analysis (zoo variants are exported again;
    files are read from their path). Run it after a fix to graph extraction, then retrain."""
    from narformer_tvm.data.store import Store
    from narformer_tvm.measure.regraph import regraph

    with Store(db, create=False) as store, progress_bar() as bar:
        task = bar.add_task("regraph", total=None, status="")
        counts = regraph(store, list(families) or None,
                         lambda i, n, name: bar.update(task, completed=i, total=n, status=name))
    click.echo(f"{counts['checked']} graphs checked: {counts['changed']} changed, {counts['failed']} no longer "
               f"extract (their measurements are now failures), {counts['missing']} left as they were (file gone, "
               "or it needs the --input-shape it was profiled with)")
    for name in counts["names_failed"][:20]:
        click.echo(f"  no graph: {name}")


@dataset.command("merge")
@click.argument("out", type=click.Path(path_type=str))
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=str))
def dataset_merge(out, sources):
    """Merge datasets (e.g. profiled on several machines) into OUT."""
    from narformer_tvm.data.store import Store, merge

    with Store(out) as dst:
        for src in sources:
            with Store(src, readonly=True) as s:
                added = merge(dst, s)
            click.echo(f"{src}: {added} measurements added")
