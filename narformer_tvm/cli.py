"""The ``narformer-tvm`` command line: thin wrappers over the library.

Exit codes: 0 ok, 1 runtime failure, 2 usage or bad input. Only this module turns errors into
messages and exit codes; heavy imports (torch, onnx) happen inside the commands.
"""
from __future__ import annotations

import json
import sys

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
              help="A checkpoint file or a hardware profile name (default: the CPU ONNX Runtime profile).")
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


def _report(err: NarformerError) -> None:
    click.echo(f"error: {err.message}", err=True)
    if err.hint:
        click.echo(f"  hint: {err.hint}", err=True)


def main(argv: list[str] | None = None) -> None:
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
