"""Accuracy x latency search over NAS-Bench-201 cells: the Pareto front, predicted then measured."""
import csv
import json
from dataclasses import asdict

import numpy as np
import pytest

from narformer_tvm.data.store import Store
from narformer_tvm.graph.cells import load_nb201
from narformer_tvm.learn.nas import (
    ADDED_OPTIONS,
    AccuracyOptions,
    apply_calibration,
    calibrate,
    cpu_has_bf16,
    nas_pareto,
    pair_difference_loss,
    pareto_front,
    predict_cells,
    resolved,
    run_protocol,
    save_cell_predictor,
    train_accuracy,
    write_pareto_report,
)
from narformer_tvm.measure.backends import MeasureConfig
from narformer_tvm.measure.zoo import NB201_ARCHS

FAST = dict(warmup_s=0.01, blocks=3, min_runs=2, max_runs=3, min_block_s=0.001)


def test_pareto_front_by_hand():
    acc = np.array([0.90, 0.80, 0.95, 0.85, 0.70, 0.95])
    lat = np.array([2.0, 1.0, 3.0, 2.5, 0.5, 4.0])
    # 4 (fastest), 1, 0, 2; 3 is beaten by 0, 5 by 2 (same accuracy, slower)
    assert pareto_front(acc, lat) == [4, 1, 0, 2]


@pytest.fixture(scope="module")
def small_nb201(tmp_path_factory):
    """60 real NAS-Bench-201 arch strings with a made-up accuracy (more convolutions, more accurate)."""
    path = tmp_path_factory.mktemp("nb201") / "nb201.csv"
    archs = [NB201_ARCHS[i] for i in np.random.default_rng(0).choice(len(NB201_ARCHS), 60, replace=False)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ArchitectureString", "CIFAR10TestAccuracy200Epochs"])
        for a in archs:
            w.writerow([a, 50 + 6 * a.count("conv_3x3") + 3 * a.count("conv_1x1")])
    return path


def test_nas_pareto_predicts_every_cell_and_measures_the_front(small_nb201, tmp_path):
    data = load_nb201(small_nb201)
    opts = AccuracyOptions(d_model=32, n_layers=2, n_groups=4, epochs=20, lr=1e-3, patience=20)
    acc_model, _ = train_accuracy(data.cells[:50], data.accuracy[:50], data.cells[50:], data.accuracy[50:], opts)
    lat_opts = AccuracyOptions(d_model=32, n_layers=2, n_groups=4, epochs=10, lr=1e-3, patience=10)
    result = nas_pareto(data, acc_model, opts, tmp_path / "lat.db", sample=24, latency_opts=lat_opts,
                        cfg=MeasureConfig(**FAST))
    assert len(result.predicted_accuracy) == len(result.predicted_ms) == 60
    assert result.front and all(result.archs[i] in result.measured_ms for i in result.front)
    accs = result.predicted_accuracy[result.front]
    assert (np.diff(accs) > 0).all() and (np.diff(result.predicted_ms[result.front]) >= 0).all()
    report = write_pareto_report(result, tmp_path / "report")
    assert report.exists() and (tmp_path / "report" / "pareto.png").stat().st_size > 0
    # a second run reads the measured cells back instead of measuring them again
    again = nas_pareto(data, acc_model, opts, tmp_path / "lat.db", sample=24, latency_opts=lat_opts,
                       cfg=MeasureConfig(**FAST))
    with Store(tmp_path / "lat.db", readonly=True) as s:
        rows = s.db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
    assert rows == len(set(result.measured_ms) | set(again.measured_ms))


def test_calibration_maps_predictions_onto_the_accuracy_scale(small_nb201):
    """Trained with a ranking loss, raw outputs are off in scale; the calibrated ones keep their order
    and stay inside the accuracies seen in training."""
    data = load_nb201(small_nb201)
    opts = AccuracyOptions(d_model=32, n_layers=2, n_groups=4, epochs=20, lr=1e-3, patience=20)
    model, _ = train_accuracy(data.cells[:50], data.accuracy[:50], data.cells[50:], data.accuracy[50:], opts)
    cal = calibrate(model, data.cells[:50], data.accuracy[:50], opts.n_freqs)
    raw = predict_cells(model, data.cells, opts.n_freqs)
    fitted = apply_calibration(cal, raw)
    order = np.argsort(raw)
    assert (np.diff(fitted[order]) >= 0).all()  # monotone: the ranking survives
    assert data.accuracy[:50].min() <= fitted.min() and fitted.max() <= data.accuracy[:50].max()
    assert np.abs(fitted - data.accuracy).mean() < np.abs(raw - data.accuracy).mean()
    assert (apply_calibration(None, raw) == raw).all()


def test_nas_cli(small_nb201, tmp_path, capsys):
    from narformer_tvm.cli.main import main

    data = load_nb201(small_nb201)
    opts = AccuracyOptions(d_model=32, n_layers=2, n_groups=4, epochs=5, lr=1e-3, patience=5)
    model, _ = train_accuracy(data.cells[:50], data.accuracy[:50], data.cells[50:], data.accuracy[50:], opts)
    save_cell_predictor(model, opts, "nb201", tmp_path / "acc.pt", {})
    with pytest.raises(SystemExit) as exc:
        main(["nas", "--data", str(small_nb201), "--accuracy-predictor", str(tmp_path / "acc.pt"), "--db",
              str(tmp_path / "lat.db"), "--sample", "20", "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    assert "predicted Pareto front" in out and (tmp_path / "out" / "front.json").exists()


def test_precision_auto_resolves_per_machine_and_both_precisions_train(small_nb201):
    assert resolved(AccuracyOptions()).precision == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolved(AccuracyOptions(precision="fp32")).precision == "fp32"
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        resolved(AccuracyOptions(precision="fp16"))
    data = load_nb201(small_nb201)
    for precision in ("fp32", "bf16"):
        opts = AccuracyOptions(d_model=32, n_layers=2, n_groups=4, epochs=15, lr=1e-3, patience=15, precision=precision)
        model, history = train_accuracy(data.cells[:50], data.accuracy[:50], data.cells[50:], data.accuracy[50:], opts)
        assert history[-1]["loss"] < history[0]["loss"], precision
        assert predict_cells(model, data.cells[50:]).dtype == np.float64


def test_ema_keeps_the_averaged_weights(small_nb201):
    """A decay near 0 follows the trained weights (same model as without the average); a decay near 1
    stops following once the warm-up is over (the returned model is not the trained one)."""
    data = load_nb201(small_nb201)
    kw = dict(d_model=32, n_layers=2, n_groups=4, epochs=4, lr=1e-2, patience=4, precision="fp32")

    def trained(**extra):
        model, _ = train_accuracy(data.cells[:50], data.accuracy[:50], data.cells[50:], data.accuracy[50:],
                                  AccuracyOptions(**kw, **extra))
        return predict_cells(model, data.cells)

    plain = trained()
    np.testing.assert_allclose(trained(ema=1e-12), plain, rtol=1e-4)
    assert not np.allclose(trained(ema=1 - 1e-9), plain, rtol=1e-2)


def test_ema_warm_up_forgets_the_first_steps():
    """Weights ramping 0..1199: the warmed-up average lags ~120 updates; a plain 0.999 average would
    still hold ~30% of its first value (lag > 500)."""
    import torch
    from torch.optim.swa_utils import AveragedModel

    from narformer_tvm.learn.nas import ema_update

    layer = torch.nn.Linear(2, 1)
    averaged = AveragedModel(layer, multi_avg_fn=ema_update(0.999))
    for i in range(1200):
        with torch.no_grad():
            layer.weight.fill_(float(i))
        averaged.update_parameters(layer)
    assert 1000 < averaged.module.weight.min().item() < 1199


def test_pair_difference_loss_by_hand():
    import torch

    pred, y = torch.tensor([0.9, 0.8, 0.5]), torch.tensor([0.9, 0.7, 0.6])
    # pairs (0,1) (1,2) (2,0): differences 0.1/0.2, 0.3/0.1, -0.4/-0.3 -> |errors| 0.1, 0.2, 0.1
    assert pair_difference_loss(pred, y, torch.tensor([1, 2, 0])).item() == pytest.approx(0.4 / 3)
    assert pair_difference_loss(y, y, torch.tensor([2, 0, 1])).item() == 0


def test_reference_loss_form_trains_and_differs(small_nb201):
    data = load_nb201(small_nb201)
    kw = dict(d_model=32, n_layers=2, n_groups=4, epochs=6, lr=1e-3, patience=6, precision="fp32")

    def trained(**extra):
        model, history = train_accuracy(data.cells[:50], data.accuracy[:50], data.cells[50:], data.accuracy[50:],
                                        AccuracyOptions(**kw, **extra))
        assert history[-1]["loss"] < history[0]["loss"]
        return predict_cells(model, data.cells)

    assert not np.allclose(trained(loss_form="reference", rank_weight=0.1, consistency_weight=0.5), trained(),
                           rtol=1e-3)
    with pytest.raises(ValueError, match="logistic, reference"):
        trained(loss_form="hinge")


def _saved_run(path, data, opts, rows, drop=()):
    """A protocol checkpoint as an earlier version wrote it: its run key lacks the options in ``drop``."""
    options = {k: v for k, v in asdict(resolved(opts)).items() if k != "seed" and k not in drop}
    run = {"cells": len(data.cells), "train_size": 20, "val_size": 10, "options": options}
    path.write_text(json.dumps({"run": run, "rows": rows}))


def test_protocol_resumes_rows_saved_before_an_option_existed(small_nb201, tmp_path):
    data = load_nb201(small_nb201)
    then = AccuracyOptions(d_model=16, n_layers=1, n_groups=2, epochs=1, **ADDED_OPTIONS)  # what the code did then
    saved = {"seed": 0, "train_size": 20, "kendall_tau": 0.123}  # not a number a 1-epoch training gives
    _saved_run(tmp_path / "narformer.json", data, then, [saved], drop=tuple(ADDED_OPTIONS))  # saved before all
    assert run_protocol(data, 20, [0], then, 10, checkpoint=tmp_path / "narformer.json") == [saved]
    # today's default head is not the one those rows were trained with: they are moved aside, not reused
    now = AccuracyOptions(d_model=16, n_layers=1, n_groups=2, epochs=1)
    assert now.head != ADDED_OPTIONS["head"]
    notices = []
    rows = run_protocol(data, 20, [0], now, 10, checkpoint=tmp_path / "narformer.json", notice=notices.append)
    assert rows[0]["kendall_tau"] != 0.123 and len(notices) == 1


def test_protocol_keeps_rows_another_process_saved_meanwhile(small_nb201, tmp_path):
    data = load_nb201(small_nb201)
    opts = AccuracyOptions(d_model=16, n_layers=1, n_groups=2, epochs=1)
    ckpt = tmp_path / "narformer.json"
    other = {"seed": 5, "train_size": 20, "kendall_tau": 0.123}

    def other_process_finishes(_msg):  # while seed 0 trains, a process running seed 5 saves its row
        if not ckpt.exists():
            _saved_run(ckpt, data, opts, [other])

    rows = run_protocol(data, 20, [0], opts, 10, progress=other_process_finishes, checkpoint=ckpt)
    saved = json.loads(ckpt.read_text())["rows"]
    assert [r["seed"] for r in saved] == [0, 5] and saved == [rows[0], other]


def test_protocol_moves_rows_of_other_settings_aside(small_nb201, tmp_path):
    data = load_nb201(small_nb201)
    opts = AccuracyOptions(d_model=16, n_layers=1, n_groups=2, epochs=1)
    ckpt = tmp_path / "narformer.json"
    saved = {"seed": 0, "train_size": 20, "kendall_tau": 0.123}
    _saved_run(ckpt, data, AccuracyOptions(d_model=16, n_layers=1, n_groups=2, epochs=1, dropout=0.05), [saved])
    notices = []
    rows = run_protocol(data, 20, [0], opts, 10, checkpoint=ckpt, notice=notices.append)
    assert rows[0]["kendall_tau"] != 0.123 and json.loads(ckpt.read_text())["rows"] == rows  # trained anew
    aside = list(tmp_path.glob("narformer-*.json"))
    assert len(aside) == 1 and json.loads(aside[0].read_text())["rows"] == [saved]  # the old rows are kept
    assert len(notices) == 1 and str(aside[0]) in notices[0]
    ckpt.write_text("{not json")  # an unreadable file is kept too, never overwritten
    with pytest.warns(UserWarning, match="moved to"):
        run_protocol(data, 20, [0], opts, 10, checkpoint=ckpt)
    kept = sorted(p.read_text() for p in tmp_path.glob("narformer-*.json"))  # both, even within one second
    assert len(kept) == 2 and kept[1] == "{not json" and json.loads(kept[0])["rows"] == [saved]
