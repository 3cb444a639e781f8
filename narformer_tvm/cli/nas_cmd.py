"""``nas``: the accuracy x latency Pareto front of NAS-Bench-201 cells."""
from __future__ import annotations

import click

from narformer_tvm.cli.ui import make_console, progress_bar


@click.command()
@click.option("--data", "data_path", type=click.Path(dir_okay=False, path_type=str), required=True,
              help="NAS-Bench-201 accuracy table (../shared/data/nasbench201_accuracy.csv).")
@click.option("--accuracy-predictor", type=click.Path(dir_okay=False, path_type=str), required=True,
              help="A cell accuracy predictor from `train --task accuracy --benchmark nb201`.")
@click.option("--db", "db_path", type=click.Path(path_type=str), required=True,
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

    from narformer_tvm.graph.cells import load_nb201
    from narformer_tvm.learn.nas import (
        load_cell_predictor,
        nas_pareto,
        write_pareto_report,
    )

    data = load_nb201(data_path)
    model, opts, state = load_cell_predictor(accuracy_predictor)
    with progress_bar() as bar:
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
    make_console().print(t)
    click.echo(f"report: {write_pareto_report(result, Path(out))}")
