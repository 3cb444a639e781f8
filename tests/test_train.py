import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from narformer_tvm.errors import InputError
from narformer_tvm.graph.tokens import GraphTable, kind_counts
from narformer_tvm.learn.evaluate import (
    LinearBaseline,
    cap_per_family,
    evaluate,
    method_names,
    write_report,
)
from narformer_tvm.learn.metrics import mape
from narformer_tvm.learn.samples import Sample, load_samples
from narformer_tvm.learn.splits import (
    carve_validation,
    split_leave_one_family_out,
    split_random,
    split_same_distribution,
)
from narformer_tvm.learn.train import (
    FitConfig,
    TrainOptions,
    optimizer,
    predict_samples,
    relative_lstsq,
    train_predictor,
)

SAMPLE_DB = Path(__file__).parent / "data" / "cpu-sample.db"


def fake(family: str, i: int, mid: int, split=None) -> Sample:
    t = GraphTable(["Conv"], np.zeros((1, 22), dtype=np.int64), np.zeros((0, 2), dtype=np.int64),
                   np.zeros(6, dtype=np.float32))
    return Sample(f"{family}{i}", f"{family}{i}", family, t, 1.0 + i, mid, split)


def test_same_distribution_holds_out_each_familys_last_tenth():
    samples = [fake("a", i, i) for i in range(20)] + [fake("b", i, 100 + i) for i in range(10)]
    train, test = split_same_distribution(samples)
    assert [samples[i].name for i in test] == ["a18", "a19", "b9"]
    assert not set(train) & set(test) and len(train) + len(test) == 30
    tr, val = carve_validation(train, 0.1, seed=0)
    assert not set(val) & set(test) and set(tr) | set(val) == set(train) and not set(tr) & set(val)


def test_imported_split_tags_are_kept():
    samples = [fake("a", i, i, "test" if i < 3 else "train") for i in range(10)]
    train, test = split_same_distribution(samples)
    assert test == [0, 1, 2]


def test_leave_one_family_out_and_random():
    samples = [fake(f, i, k) for k, (f, i) in enumerate((f, i) for f in "abc" for i in range(5))]
    train, test = split_leave_one_family_out(samples, "b")
    assert {samples[i].family for i in test} == {"b"} and "b" not in {samples[i].family for i in train}
    with pytest.raises(InputError):
        split_leave_one_family_out(samples, "zzz")
    a, b = split_random(samples, 0.2, seed=1), split_random(samples, 0.2, seed=1)
    assert a == b and len(a[1]) == 3 and not set(a[0]) & set(a[1])


def test_linear_baseline_recovers_a_linear_law():
    samples = []
    for i, (flops, mem) in enumerate([(1e6, 1e5), (4e6, 2e5), (9e6, 8e5), (2e7, 1e6), (5e7, 3e6)]):
        st = np.array([0, 0, np.log2(1 + flops) / 10, 0, np.log2(1 + mem) / 10, 0], dtype=np.float32)
        t = GraphTable([], np.zeros((0, 22), dtype=np.int64), np.zeros((0, 2), dtype=np.int64), st)
        samples.append(Sample(str(i), str(i), "x", t, 1e-6 * flops + 2e-6 * mem + 0.5, i))
    base = LinearBaseline(("flops", "memory")).fit(samples)
    assert mape(base.predict(samples), [s.latency_ms for s in samples]) < 1e-3


def test_method_names():
    assert method_names("main") == ["flops", "flops_mac", "nnlp", "narformer", "narformer_flops_mac"]
    assert len(method_names("ablations")) == 6
    # groups mix with names in one list, each method once, in order
    assert method_names("main,narformer_by_kind,flops") == [*method_names("main"), "narformer_by_kind"]
    assert method_names("narformer_roofline, all")[:2] == ["narformer_roofline", "flops"]
    with pytest.raises(InputError, match="unknown method"):
        method_names("narformer,bogus")


@pytest.fixture(scope="module")
def real_samples():
    samples, cfg = load_samples(SAMPLE_DB)
    assert cfg["config"]["runtime"] == "onnxruntime"
    return samples


def test_recalibration_takes_out_a_constant_factor(real_samples):
    from narformer_tvm.learn.train import recalibrate
    from narformer_tvm.model.predictor import new_predictor

    pred = new_predictor(d_model=16, n_layers=1)
    before = predict_samples(pred, real_samples)[0]
    measured = np.array([s.latency_ms for s in real_samples])
    recalibrate(pred, real_samples)
    after = predict_samples(pred, real_samples)[0]
    assert np.median(measured / after) == pytest.approx(1.0)
    np.testing.assert_allclose(after / before, pred.metadata["recalibrated"]["factor"], rtol=1e-6)
    assert pred.metadata["recalibrated"]["samples"] == len(real_samples)
    with pytest.raises(ValueError, match="at least one"):
        recalibrate(pred, [])


def test_training_reduces_validation_error_on_real_measurements(real_samples, tmp_path):
    train_idx, test_idx = split_same_distribution(real_samples)
    tr, val = carve_validation(train_idx, 0.2, seed=0)
    train, val = [real_samples[i] for i in tr], [real_samples[i] for i in val]
    opts = TrainOptions(model={"d_model": 32, "n_groups": 4}, fit=FitConfig(epochs=1, batch_size=16, lr=2e-3, loss="log"))
    untrained = train_predictor(train, val, TrainOptions(model=opts.model, fit=FitConfig(epochs=1, lr=1e-9)))
    before = mape(predict_samples(untrained, val)[0], [s.latency_ms for s in val])
    opts.fit.epochs = 60
    trained = train_predictor(train, val, opts, checkpoint=tmp_path / "p.pt")
    after = mape(predict_samples(trained, val)[0], [s.latency_ms for s in val])
    assert after < 0.8 * before, (before, after)  # tiny model, 12 families, ~90 samples
    assert trained.metadata["val_mape"] == pytest.approx(after)
    assert not list(tmp_path.glob("p.pt*.state"))  # resumable state is removed once done


def test_a_predictor_records_what_it_trained_on_and_a_finetune_adds_to_it(real_samples, tmp_path):
    """Coverage (what `estimate` warns against) is the training and validation models, never the held-out
    ones; a fine-tuned predictor covers both its datasets; the profile written from it says the same."""
    from narformer_tvm.estimate import coverage
    from narformer_tvm.learn.shipping import rescore_profile, write_profile

    vit = [s for s in real_samples if s.family == "vit"]
    cnn = [s for s in real_samples if s.family in ("resnet", "vgg")]
    assert vit and cnn and "MatMul" in {o for s in vit for o in s.table.ops}
    assert "MatMul" not in {o for s in cnn for o in s.table.ops}
    fast = FitConfig(epochs=1, batch_size=16, lr=1e-3)
    pred = train_predictor(cnn[:-2], cnn[-2:-1], TrainOptions(model={"d_model": 16, "n_groups": 2}, fit=fast))
    assert pred.metadata["coverage"] == coverage([s.table for s in cnn[:-1]])  # cnn[-1] held out
    assert "MatMul" not in pred.metadata["coverage"]["op_types"]
    tuned = train_predictor(vit[:-1], vit[-1:], TrainOptions(fit=fast), init=pred)
    cov = tuned.metadata["coverage"]
    assert cov["models"] == len(cnn) - 1 + len(vit)
    assert cov["op_types"]["MatMul"] == sum("MatMul" in s.table.ops for s in vit)
    assert cov["op_types"]["Conv"] == sum("Conv" in s.table.ops for s in [*cnn[:-1], *vit])
    first, second = pred.metadata["coverage"], coverage([s.table for s in vit])
    assert cov["macs"] == [min(first["macs"][0], second["macs"][0]), max(first["macs"][1], second["macs"][1])]
    tuned.profile = {"dataset": str(SAMPLE_DB), "labels": "raw"}  # a dataset holding many models it never saw
    folder = tmp_path / "unit-cpu"
    assert json.loads(write_profile(tuned, folder).read_text())["coverage"] == cov
    assert rescore_profile(folder)["coverage"] == cov


def test_ensemble_members_trained_apart_equal_one_run(real_samples, tmp_path):
    """Members trained by separate calls (one process per core) sharing a checkpoint make the same
    ensemble as one call training them all; the call that finds a member missing returns None."""
    train, val = real_samples[:60], real_samples[60:80]
    opts = TrainOptions(model={"d_model": 16, "n_groups": 4}, fit=FitConfig(epochs=3, batch_size=16, lr=2e-3),
                        ensemble=2)
    whole = train_predictor(train, val, opts, checkpoint=tmp_path / "whole.pt")
    assert train_predictor(train, val, opts, checkpoint=tmp_path / "apart.pt", members=[1]) is None
    assert (tmp_path / "apart.pt.member1.state").exists() and not (tmp_path / "apart.pt.member0.state").exists()
    apart = train_predictor(train, val, opts, checkpoint=tmp_path / "apart.pt", members=[0])
    assert not list(tmp_path.glob("*.state"))

    def other_process(msg, done=[]):  # member 0 finishes while member 1 is training
        if not done:
            done.append(train_predictor(train, val, opts, checkpoint=tmp_path / "overlap.pt", members=[0]))
    overlap = train_predictor(train, val, opts, checkpoint=tmp_path / "overlap.pt", progress=other_process,
                              members=[1])
    assert overlap is not None and not list(tmp_path.glob("*.state"))
    for a, b, c in zip(whole.models, apart.models, overlap.models):
        assert all(torch.equal(a.state_dict()[n], t) for n, t in b.state_dict().items())
        assert all(torch.equal(a.state_dict()[n], t) for n, t in c.state_dict().items())
    assert not torch.equal(*(m.state_dict()["embed.0.weight"] for m in whole.models))  # two different seeds
    with pytest.raises(ValueError, match="checkpoint"):
        train_predictor(train, val, opts, members=[0])


@pytest.mark.parametrize("readout,rtol", [("flops_mac", 1e-3), ("roofline", 0.03), ("by_kind", 1e-4)])
def test_anchored_readouts_start_at_the_fitted_linear_model(real_samples, readout, rtol):
    """Untrained, the corrections are exp(0) = 1: predictions are the FLOPs+MAC baseline's (roofline:
    the same line summed per operator, from per-operator counts stored to ~4%; by_kind: the line with
    rates per operator kind)."""
    train, val = real_samples[:60], real_samples[60:]
    opts = TrainOptions(model={"d_model": 32, "n_groups": 4, "readout": readout}, fit=FitConfig(epochs=1, lr=1e-9))
    untrained = train_predictor(train, val, opts)
    linear = LinearBaseline(("flops", "memory")).fit(train).predict(val)
    if readout == "by_kind":
        w = relative_lstsq(np.array([kind_counts(s.table) for s in train]), np.array([s.latency_ms for s in train]))
        linear = np.array([kind_counts(s.table) for s in val]) @ w
        assert not np.allclose(linear, LinearBaseline(("flops", "memory")).fit(train).predict(val), rtol=1e-2)
    assert np.allclose(predict_samples(untrained, val)[0], linear, rtol=rtol)
    opts = replace(opts, fit=FitConfig(epochs=30, batch_size=16, lr=2e-3, loss="log", patience=30))
    trained = train_predictor(train, val, opts)
    assert not np.allclose(predict_samples(trained, val)[0], linear, rtol=1e-2)  # the head learned a correction


def test_evaluate_writes_a_report(real_samples, tmp_path):
    results = evaluate(real_samples, "lofo", ["flops", "flops_mac"], runs=1)
    families = {s.family for s in real_samples}
    assert {r.split for r in results} == families
    for r in results:  # no leakage: the held-out family never trains
        assert set(r.families) == {r.split}
    path = write_report(results, tmp_path, "lofo test", noise_floor=0.02, command="narformer-tvm evaluate ...",
                        later_floors={"repeat2": 0.0444})
    text = path.read_text()
    assert "| flops_mac |" in text and "noise floor" in text and "2.00%" in text
    assert "main pass vs repeat2, measured in a later sitting: 4.44%" in text
    assert json.loads((tmp_path / "summary.json").read_text())["flops"]["runs"] == 1


def test_runs_on_the_same_test_set_also_score_as_one_ensemble(tmp_path):
    from narformer_tvm.learn.evaluate import Result, aggregate, ensembles_of_runs

    runs = [Result("narformer", "lofo", run, "vgg", ["a", "b"], ["vgg", "vgg"], pred, [2.0, 4.0])
            for run, pred in ((0, [1.0, 3.0]), (1, [3.0, 5.0]))]
    shuffled = [Result("narformer", "random", run, "random", names, ["vgg"], [1.0], [1.0])
                for run, names in ((0, ["a"]), (1, ["b"]))]  # another test set each run: no ensemble
    ensembles = ensembles_of_runs(runs + shuffled)
    assert list(ensembles) == ["narformer"]
    (ens,) = ensembles["narformer"]
    assert ens.method == "narformer, ensemble of 2 runs" and ens.pred == [2.0, 4.0] and ens.split == "vgg"
    assert aggregate(runs)["narformer"]["mean"]["mape"] == pytest.approx(0.375)  # each run: (50% + 25%) / 2
    text = write_report(runs, tmp_path, "runs").read_text()
    assert "| narformer, ensemble of 2 runs | 0.00% (0.00%) |" in text
    assert "| family | n | MAPE | Acc(10%) | ensemble of 2 runs: MAPE | Acc(10%) |" in text
    assert "| vgg | 4 | 37.50% | 0.0% | 0.00% | 100.0% |" in text  # pooled runs, then the ensemble


def test_an_interrupted_evaluation_resumes_from_its_finished_splits(real_samples, tmp_path, monkeypatch):
    import narformer_tvm.learn.evaluate as ev

    fit, ckpt, steps = FitConfig(epochs=1, batch_size=16), tmp_path / "finished.json", []
    first = evaluate(real_samples, "lofo", ["flops", "nnlp"], fit=fit, model_overrides={"d_model": 16},
                     checkpoint=ckpt, steps=lambda i, n: steps.append((i, n)))
    n = len({s.family for s in real_samples})  # one split per family; the regression takes no time
    assert steps == [(i, n) for i in range(n + 1)]  # the bar's total and ETA count the trainings
    monkeypatch.setattr(ev, "run_method", lambda *a, **k: pytest.fail("a finished split was run again"))
    again = evaluate(real_samples, "lofo", ["flops", "nnlp"], fit=fit, model_overrides={"d_model": 16},
                     checkpoint=ckpt, steps=lambda i, n: steps.append((i, n)))
    assert [r.__dict__ for r in again] == [r.__dict__ for r in first] and len(steps) == n + 1  # nothing left to count
    notices = []
    with pytest.raises(pytest.fail.Exception):  # other options: nothing is reused
        evaluate(real_samples, "lofo", ["flops"], fit=replace(fit, epochs=2), checkpoint=ckpt, notice=notices.append)
    aside = list(tmp_path.glob("finished-*.json"))  # nor overwritten: the finished splits are moved aside
    assert len(aside) == 1 and len(json.loads(aside[0].read_text())["results"]) == len(first)
    assert not ckpt.exists() and len(notices) == 1 and str(aside[0]) in notices[0]


def test_lofo_processes_holding_out_different_families_share_one_checkpoint(real_samples, tmp_path, monkeypatch):
    import narformer_tvm.learn.evaluate as ev

    families, ckpt = sorted({s.family for s in real_samples}), tmp_path / "finished.json"
    half = evaluate(real_samples, "lofo", ["flops"], checkpoint=ckpt, hold_out=families[:1])
    assert [r.split for r in half] == families[:1]
    rest = evaluate(real_samples, "lofo", ["flops"], checkpoint=ckpt, hold_out=families[1:])  # a second process
    monkeypatch.setattr(ev, "run_method", lambda *a, **k: pytest.fail("a finished split was run again"))
    merged = evaluate(real_samples, "lofo", ["flops"], checkpoint=ckpt)  # the full report: nothing left to run
    assert [r.__dict__ for r in merged] == [r.__dict__ for r in half + rest]
    with pytest.raises(InputError, match="choose from"):
        evaluate(real_samples, "lofo", ["flops"], hold_out=["nosuchnet"])
    with pytest.raises(InputError, match="lofo protocol only"):
        evaluate(real_samples, "same", ["flops"], hold_out=families[:1])


def test_cap_per_family_keeps_the_first_models_of_each_family(real_samples):
    capped = cap_per_family(real_samples, 2)
    for fam in {s.family for s in real_samples}:
        ids = sorted(s.model_id for s in real_samples if s.family == fam)
        assert sorted(s.model_id for s in capped if s.family == fam) == ids[:2]


def test_train_and_evaluate_cli(tmp_path, capsys, exported):
    from narformer_tvm.cli.main import main
    from narformer_tvm.model.predictor import Predictor

    out = tmp_path / "p.pt"
    args = ["--db", str(SAMPLE_DB), "--d-model", "16", "--groups", "2", "--epochs", "2", "--batch-size", "32"]
    with pytest.raises(SystemExit) as exc:
        main(["train", *args, "--out", str(out), "--ensemble", "2", "--profile-dir", str(tmp_path / "prof")])
    captured = capsys.readouterr()
    assert exc.value.code == 0, captured.err
    assert "validation (" in captured.err and "predictor written" in captured.out
    assert "MAPE" not in captured.err.split("test split")[1]  # the test split is scored, not shown before a choice
    p = Predictor.load(out)
    assert len(p.models) == 2 and p.profile["runtime"] == "onnxruntime" and p.metadata["test"]["n"] > 0
    prof = json.loads((tmp_path / "prof" / "profile.json").read_text())
    assert prof["name"] == "prof" and prof["metrics"]["mape"] >= 0
    # the same ensemble, one member per call: the call finishing the last member writes the predictor
    for member, written in (("1", False), ("0", True)):
        with pytest.raises(SystemExit) as exc:
            main(["train", *args, "--out", str(tmp_path / "q.pt"), "--ensemble", "2", "--members", member])
        captured = capsys.readouterr()
        assert exc.value.code == 0 and (tmp_path / "q.pt").exists() == written, captured
        assert written or f"ensemble member {member} of 2 trained" in captured.out
    few = load_samples(SAMPLE_DB)[0][:5]
    np.testing.assert_array_equal(predict_samples(Predictor.load(tmp_path / "q.pt"), few), predict_samples(p, few))
    # --recalibrate: the same weights, one factor (needs a predictor to start from)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--db", str(SAMPLE_DB), "--out", str(tmp_path / "r.pt"), "--recalibrate"])
    assert exc.value.code == 2 and "--finetune" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--db", str(SAMPLE_DB), "--out", str(tmp_path / "r.pt"), "--finetune", str(out), "--recalibrate"])
    captured = capsys.readouterr()
    assert exc.value.code == 0 and "recalibrated" in captured.out, captured.err
    r = Predictor.load(tmp_path / "r.pt")
    factor = r.metadata["recalibrated"]["factor"]
    np.testing.assert_allclose(predict_samples(r, few)[0], factor * predict_samples(p, few)[0], rtol=1e-5)
    # --finetune of one model with --ensemble 2: two members from the same start, each trained with its own seed;
    # the predictor records what it started from (the factor is in the weights' scale now, not a separate step)
    r.models = r.models[:1]
    r.save(tmp_path / "one.pt")
    with pytest.raises(SystemExit) as exc:
        main(["train", *args, "--out", str(tmp_path / "ft.pt"), "--finetune", str(tmp_path / "one.pt"),
              "--ensemble", "2", "--profile-dir", str(tmp_path / "ftprof")])
    captured = capsys.readouterr()
    assert exc.value.code == 0, captured.err
    ft = Predictor.load(tmp_path / "ft.pt")
    spread = predict_samples(ft, few)[1]
    assert len(ft.models) == 2 and spread.max() > 0  # the members moved apart
    assert "recalibrated" not in ft.metadata and ft.metadata["test"]["n"] > 0
    assert ft.metadata["finetuned_from"] == {"train_samples": p.metadata["train_samples"],
                                             "recalibrated": r.metadata["recalibrated"], "members": 1}
    ftprof = json.loads((tmp_path / "ftprof" / "profile.json").read_text())
    assert ftprof["finetuned_from"]["recalibrated"]["factor"] == factor and "recalibrated" not in ftprof
    # a profile folder is found by name
    with pytest.raises(SystemExit) as exc:
        import os
        os.environ["NARFORMER_PROFILES"] = str(tmp_path)
        try:
            main(["estimate", str(exported("resnet18")), "--predictor", "prof"])
        finally:
            del os.environ["NARFORMER_PROFILES"]
    captured = capsys.readouterr()
    assert exc.value.code == 0 and "ms" in captured.out
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", *args, "--methods", "flops,nnlp", "--protocol", "random", "--out", str(tmp_path / "rep"),
              "--save-predictors"])
    assert exc.value.code == 0
    assert (tmp_path / "rep" / "report.md").exists() and (tmp_path / "rep" / "nnlp_pred_vs_measured.png").exists()
    # the trained model is kept (the regressions are not), and predicts what the report scored
    assert [f.name for f in (tmp_path / "rep" / "predictors").iterdir()] == ["nnlp-run0-random.pt"]
    kept = Predictor.load(tmp_path / "rep" / "predictors" / "nnlp-run0-random.pt")
    nnlp = next(r for r in json.loads((tmp_path / "rep" / "results.json").read_text()) if r["method"] == "nnlp")
    by_name = {s.name: s for s in load_samples(SAMPLE_DB)[0]}
    np.testing.assert_allclose(predict_samples(kept, [by_name[n] for n in nnlp["names"]])[0], nnlp["pred"], rtol=1e-5)
    assert kept.metadata["test"]["n"] == len(nnlp["names"]) and kept.metadata["evaluated"]["split"] == "random"
    assert kept.profile["dataset"] == str(SAMPLE_DB)
    # an existing predictor scored on every model, one line per model
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--db", str(SAMPLE_DB), "--predictor", str(out), "--out", str(tmp_path / "scored")])
    assert exc.value.code == 0
    report = (tmp_path / "scored" / "report.md").read_text()
    scored = json.loads((tmp_path / "scored" / "results.json").read_text())[0]
    assert len(scored["names"]) > 3 and all(f"| {n} |" in report for n in scored["names"])
    np.testing.assert_allclose(scored["pred"], predict_samples(Predictor.load(out), load_samples(SAMPLE_DB)[0])[0],
                               rtol=1e-5)
    # --test-split: only the split `train` held out, the one profile.json's metrics are on
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--db", str(SAMPLE_DB), "--predictor", str(out), "--test-split", "--out", str(tmp_path / "ho")])
    assert exc.value.code == 0
    held = json.loads((tmp_path / "ho" / "results.json").read_text())[0]
    samples = load_samples(SAMPLE_DB)[0]
    assert held["names"] == [samples[i].name for i in split_same_distribution(samples)[1]]
    assert len(held["names"]) == p.metadata["test"]["n"] < len(scored["names"])
    assert "held-out models" in (tmp_path / "ho" / "report.md").read_text()
    # scored on the labels the predictor learned (raw here) unless told; the report names them
    published = Path(__file__).resolve().parents[1] / "profiles" / "cpu-onnxruntime-zen5" / "published"
    assert prof["labels"] == "raw"
    for extra, labels, correct in (([], "raw", False), (["--regime-correction"], "regime-corrected", True),
                                   (["--sitting-level"], "sitting-corrected", "sitting")):
        with pytest.raises(SystemExit) as exc:
            main(["evaluate", "--db", str(published), "--predictor", str(out), "--out", str(tmp_path / labels), *extra])
        assert exc.value.code == 0
        assert f"({labels} labels;" in (tmp_path / labels / "report.md").read_text()
        true = json.loads((tmp_path / labels / "results.json").read_text())[0]["true"]
        expected = load_samples(published, regime_correct=correct)[0]
        np.testing.assert_allclose(true, [s.latency_ms for s in expected])
    capsys.readouterr()
    for extra, says in ((["--protocol", "lofo", "--hold-out", "nosuchnet"], "choose from"),
                        (["--predictor", str(out), "--hold-out", "resnet"], "--hold-out"),
                        (["--no-regime-correction", "--sitting-level"], "drop --no-regime-correction"),
                        (["--test-split"], "--predictor")):
        with pytest.raises(SystemExit) as exc:
            main(["evaluate", "--db", str(SAMPLE_DB), "--methods", "flops", "--out", str(tmp_path / "x"), *extra])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and says in err and "Traceback" not in err


def test_fingerprint_mismatch_warns(tmp_path, capsys, exported):
    from narformer_tvm.cli.main import main
    from narformer_tvm.graph.tokens import FeatureConfig
    from narformer_tvm.model.predictor import new_predictor

    p = new_predictor(FeatureConfig(n_freqs=2), d_model=16, n_groups=2)
    p.profile = {"name": "elsewhere", "fingerprint": {"cpu": "Some Other CPU 9000", "physical_cores": 64}}
    p.save(tmp_path / "other.pt")
    with pytest.raises(SystemExit) as exc:
        main(["estimate", str(exported("resnet18")), "--predictor", str(tmp_path / "other.pt")])
    err = capsys.readouterr().err
    assert exc.value.code == 0 and "warning: predictor 'elsewhere' was trained for other hardware" in err
    assert "Some Other CPU 9000" in err


def test_noisy_rows_are_left_out_unless_asked(tmp_path):
    import shutil
    import sqlite3

    db = tmp_path / "d.db"
    shutil.copy(SAMPLE_DB, db)
    con = sqlite3.connect(db)
    con.execute("UPDATE measurements SET noisy = (id % 4 = 0)")
    flagged = con.execute("SELECT COUNT(*) FROM measurements WHERE noisy=1 AND latency_ms > 0").fetchone()[0]
    con.commit()
    con.close()
    clean, _ = load_samples(db)
    everything, _ = load_samples(db, include_noisy=True)
    assert flagged > 0 and len(everything) - len(clean) == flagged


def test_gated_labels_are_divided_by_their_regime_factor(tmp_path):
    import json
    import shutil
    import sqlite3

    db = tmp_path / "d.db"
    shutil.copy(SAMPLE_DB, db)
    con = sqlite3.connect(db)
    ids = [i for (i,) in con.execute("SELECT id FROM measurements WHERE latency_ms > 0 AND noisy = 0 "
                                     "AND pass = 'main' ORDER BY id LIMIT 3")]
    # quicker probes 0.2, 0.22, 0.242 ms: the typical one (median) is 0.22, so those labels are divided by
    # 0.2 / 0.22, 1 and 1.1, each to the power 0.5; ungated rows keep theirs
    for i, probes in zip(ids, ([0.25, 0.2], [0.22, 0.3], [0.242, 0.25])):
        con.execute("UPDATE measurements SET info=? WHERE id=?",
                    (json.dumps({"probe_ms": probes, "probe_fast_ms": 0.2}), i))
    con.commit()
    con.close()
    raw, raw_cfg = load_samples(db, regime_correct=False)
    corrected, cfg = load_samples(db)
    assert (raw_cfg["labels"], cfg["labels"]) == ("raw", "regime-corrected")
    ratios = sorted(a.latency_ms / b.latency_ms for a, b in zip(raw, corrected) if a.key == b.key)
    assert len(ratios) == len(raw)
    assert ratios[0] == pytest.approx((0.2 / 0.22) ** 0.5) and ratios[-1] == pytest.approx(1.1 ** 0.5)
    assert ratios[1:-1] == pytest.approx([1.0] * (len(ratios) - 2))
    assert load_samples(SAMPLE_DB)[1]["labels"] == "raw"  # ungated rows carry no probes


def test_mean_over_passes_labels_a_model_measured_twice_by_the_geometric_mean(tmp_path):
    import shutil
    import sqlite3

    db = tmp_path / "d.db"
    shutil.copy(SAMPLE_DB, db)
    con = sqlite3.connect(db)
    main = con.execute("SELECT model_id, config_id, latency_ms FROM measurements WHERE latency_ms > 0 AND noisy = 0"
                       " AND pass = 'main' ORDER BY id LIMIT 2").fetchall()
    con.execute("DELETE FROM measurements WHERE pass = 'repeat'")
    for (model, config, ms), factor, noisy in zip(main, (1.21, 4.0), (0, 1)):  # the second repeat is noisy
        con.execute("INSERT INTO measurements (model_id, config_id, pass, latency_ms, noisy, measured_at)"
                    " VALUES (?, ?, 'repeat', ?, ?, '2026-11-30T07:00:00')", (model, config, ms * factor, noisy))
    con.commit()
    con.close()
    single, single_cfg = load_samples(db)
    mean, cfg = load_samples(db, mean_passes=True)
    assert (single_cfg["labels"], cfg["labels"]) == ("raw", "raw, mean over passes")
    ratios = {b.model_id: b.latency_ms / a.latency_ms for a, b in zip(single, mean)}
    assert ratios.pop(main[0][0]) == pytest.approx(1.1)  # sqrt(1 x 1.21)
    assert ratios and all(r == pytest.approx(1.0) for r in ratios.values())  # one pass, or a noisy repeat
    con = sqlite3.connect(db)  # a third pass (a later repeat round) joins the mean; a failed one does not
    for (model, config, ms), factor, lat in zip(main, (1.1, 2.0), (1.1, None)):
        con.execute("INSERT INTO measurements (model_id, config_id, pass, latency_ms, noisy, measured_at)"
                    " VALUES (?, ?, 'repeat2', ?, 0, '2026-11-30T09:00:00')",
                    (model, config, None if lat is None else ms * factor))
    con.commit()
    con.close()
    three = {s.model_id: s.latency_ms / a.latency_ms for a, s in zip(single, load_samples(db, mean_passes=True)[0])}
    assert three[main[0][0]] == pytest.approx(1.1)  # cube root of 1 x 1.21 x 1.1
    assert three[main[1][0]] == pytest.approx(1.0)  # its repeat is noisy, its repeat2 failed
    later, _ = load_samples(db, pass_="repeat2")  # one pass alone: its successful rows only
    assert [s.model_id for s in later] == [main[0][0]] and later[0].latency_ms == pytest.approx(main[0][2] * 1.1)
    with pytest.raises(InputError, match="in pass 'repeat3'"):
        load_samples(db, pass_="repeat3")


def test_optimizer_warms_up_linearly_then_decays_to_zero():
    import torch

    model = torch.nn.Linear(3, 1)
    opt, sched = optimizer(model, 1e-3, 1e-2, steps=100, warmup=0.1)
    assert opt.defaults["fused"]  # one kernel per step: the per-tensor loop cost 7% of a cell training epoch
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # 10 warm-up steps
    assert lrs[10] == pytest.approx(1e-3) and lrs[55] == pytest.approx(5e-4, rel=0.02)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 1e-6


def test_evaluate_refuses_a_model_option_its_methods_would_overrule(tmp_path, capsys):
    from narformer_tvm.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--db", str(SAMPLE_DB), "--methods", "narformer_flops_mac", "--readout", "sum",
              "--out", str(tmp_path / "r")])
    assert exc.value.code == 2 and "narformer_flops_mac fixes readout='flops_mac'" in capsys.readouterr().err


def test_graph_identical_models_are_one_sample_and_never_on_both_sides(tmp_path):
    from narformer_tvm.learn.samples import load_samples, merge_graph_duplicates

    samples, _ = load_samples(SAMPLE_DB)  # its duplicates merged already
    twin = replace(samples[-1], key="twin", name="twin", model_id=10**6, latency_ms=samples[-1].latency_ms * 4)
    merged, n = merge_graph_duplicates([*samples, twin])
    assert n == 1 and len(merged) == len(samples)
    kept = [s for s in merged if s.key == samples[-1].key][0]
    assert kept.latency_ms == pytest.approx(samples[-1].latency_ms * 2)  # geometric mean of x and 4x
    train, test = split_same_distribution(merged)
    digests = lambda idx: {merged[i].table.digest() for i in idx}  # noqa: E731
    assert not digests(train) & digests(test)


def test_evaluate_records_validation_error_to_choose_by(real_samples):
    from narformer_tvm.learn.evaluate import evaluate, markdown, validation_mape

    results = evaluate(real_samples, "same", ["flops", "flops_mac"])
    val = validation_mape(results)
    assert set(val) == {"flops", "flops_mac"} and all(0 < v < 5 for v in val.values())
    assert "| method | validation MAPE |" in markdown(results, "t") and "Choose between methods" in markdown(results, "t")
