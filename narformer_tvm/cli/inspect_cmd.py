"""``inspect`` and ``estimate``: what the predictor sees, and what it predicts."""
from __future__ import annotations

import json
import sys

import click

from narformer_tvm.cli.options import batch_option, input_shape_option
from narformer_tvm.cli.ui import make_console, report_error, si_units


@click.command()
@click.argument("model", type=click.Path(dir_okay=True, path_type=str))
@input_shape_option
@batch_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--layers/--no-layers", default=True, help="Show the per-layer table.")
def inspect(model, input_shapes, batch_size, as_json, layers):
    """Show the operator graph of MODEL: layers, op histogram, FLOPs/MACs, parameters, memory."""
    from narformer_tvm.graph.onnx_graph import build_graph, parse_input_shapes
    from narformer_tvm.graph.tokens import unknown_ops

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

    con = make_console()
    if layers:
        t = Table(title=f"{model}: layers", title_justify="left")
        for col in ("#", "name", "op", "output shape", "MACs", "params"):
            t.add_column(col, justify="right" if col in ("#", "MACs", "params") else "left")
        for i, n in enumerate(g.nodes):
            out = "x".join(map(str, n.output_shapes[0])) if n.output_shapes else ""
            t.add_row(str(i), n.name, n.op_type, out, si_units(n.macs) if n.macs else "", si_units(n.params) if n.params else "")
        con.print(t)
    h = Table(title="op histogram", title_justify="left")
    h.add_column("op")
    h.add_column("count", justify="right")
    for op, c in g.op_histogram().most_common():
        h.add_row(op + (" (unknown)" if op in unknown else ""), str(c))
    con.print(h)
    con.print(f"[bold]{model}[/bold]: opset {g.opset}, batch {g.batch_size}, {len(g.nodes)} layers, "
              f"{len(g.edges)} edges")
    con.print(f"  MACs {si_units(g.macs)}  FLOPs {si_units(g.flops)}  params {si_units(g.params)}  "
              f"memory access {si_units(g.memory, 'B')}")
    if unknown:
        con.print(f"  [yellow]unknown ops (encoded in the shared 'unknown' slot): "
                  f"{', '.join(f'{k} x{v}' for k, v in unknown.items())}[/yellow]")


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--predictor", "predictor_spec", metavar="PATH|PROFILE", default=None,
              help="A checkpoint file or a hardware profile name (default: the shipped ONNX Runtime CPU "
                   "profile measured on this machine's CPU, else `cpu-onnxruntime`).")
@input_shape_option
@batch_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def estimate(models, predictor_spec, input_shapes, batch_size, as_json):
    """Predict the latency of MODELS (ONNX files or folders of them)."""
    from narformer_tvm.estimate import collect_models
    from narformer_tvm.estimate import estimate as run_estimate
    from narformer_tvm.graph.onnx_graph import parse_input_shapes
    from narformer_tvm.profiles import (
        config_mismatch,
        default_profile,
        fingerprint_mismatch,
        load_profile_predictor,
        profile_fields,
        resolve_predictor,
    )

    shapes = parse_input_shapes(input_shapes)
    files = collect_models(models)
    spec = predictor_spec or default_profile()  # chosen once: it reads every candidate profile
    path = resolve_predictor(spec)
    predictor = load_profile_predictor(spec)
    training = profile_fields(spec, ("coverage",)).get("coverage") or predictor.metadata.get("coverage")

    for warning in (fingerprint_mismatch(predictor), config_mismatch(predictor)):
        if warning:
            click.echo(f"warning: {warning}", err=True)
    results = run_estimate(files, predictor, shapes, batch_size, training)
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
                          str(len(r.graph.nodes)), si_units(r.graph.macs))
        make_console().print(t)
    for r in results:
        if r.outside:
            click.echo(f"warning: {r.path}: outside what the predictor was trained on ({'; '.join(r.outside)}): "
                       "expect a larger error", err=True)
    for r in failed:
        report_error(r.error)
    if failed:
        sys.exit(max(r.error.exit_code for r in failed))
