import json
from dataclasses import replace

import click
import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from narformer_tvm.calibrate import (CALIBRATION_SET, FOLDS, METHODS, accuracy, adapt, apply, calibrate,
                                     calibration_variants, candidate_methods, choose, fit_method, folds_of, held_out,
                                     label_levels, level_corrected, probe_levels, reference_levels)
from narformer_tvm.cli.calibrate_cmd import parse_budget, print_result
from narformer_tvm.cli.main import cli
from narformer_tvm.errors import InputError
from narformer_tvm.measure.backends import MeasureConfig, fingerprint, get_backend
from narformer_tvm.profiles import default_profile, list_profiles, load_profile_predictor, user_profiles_dir

FAST = dict(warmup_s=0.01, blocks=3, min_runs=2, max_runs=3, min_block_s=0.001)


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NARFORMER_USER_DIR", str(tmp_path / "user"))
    return tmp_path / "user" / "profiles"


def test_the_user_directory_follows_the_environment(user_dir):
    assert user_profiles_dir() == user_dir


def test_adaptations_and_their_accuracy():
    rng = np.random.default_rng(0)
    pred = np.exp(rng.uniform(0, 4, 40))
    true = 1.3 * pred ** 1.1 * np.exp(rng.normal(0, 0.02, 40))
    assert fit_method("base", pred, true) == {"method": "base", "log_scale": 0.0, "exponent": 1.0}
    scaled = fit_method("scaled", pred, true)
    loglin = fit_method("loglinear", pred, true)
    assert abs(loglin["exponent"] - 1.1) < 0.05
    err = lambda cal: np.mean(np.abs(apply(cal, pred) - true) / true)  # noqa: E731
    assert err(loglin) < 0.03 < err(scaled) < err(fit_method("base", pred, true))
    acc = accuracy(apply(loglin, pred), true)
    assert acc["n"] == 40 and acc["mape_90"][0] <= acc["mape"] <= acc["mape_90"][1] and acc["acc10"] == 1.0
    keys = [f"k{i}" for i in range(200)]
    assert 30 <= held_out(keys).sum() <= 70 and held_out(keys).tolist() == held_out(keys).tolist()
    assert held_out(keys[:3]).tolist() == [True, False, False]  # too few rows for a hashed quarter
    assert np.bincount(folds_of(keys)).tolist() == [50] * FOLDS  # balanced, whatever the hashes


class _Row:  # what adapt reads of a calibration row
    def __init__(self, key, latency_ms):
        self.key, self.latency_ms = key, latency_ms


def test_adaptations_are_judged_out_of_fold_on_every_row():
    rng = np.random.default_rng(2)
    n = 48
    pred = np.exp(rng.uniform(0, 4, n))
    shape = rng.uniform(0, 1, (n, 7))
    true = 0.8 * pred * np.exp(-0.4 * shape[:, 3] + rng.normal(0, 0.02, n))
    rows = [_Row(f"m{i}", t) for i, t in enumerate(true)]
    fitted = adapt(rows, pred, shape, METHODS[1:])
    assert set(fitted.errors) == set(METHODS[1:]) and all(len(e) == n for e in fitted.errors.values())
    assert fitted.method == "descriptors" and fitted.errors["descriptors"].mean() < 0.04
    # each row was predicted by a map fitted without it: not the same as the map fitted on every row
    in_sample = np.abs(fitted.predict("scaled", rows, pred, shape) - true) / true
    assert not np.allclose(in_sample, fitted.errors["scaled"])


def test_a_shape_correction_fits_what_a_log_linear_map_cannot():
    rng = np.random.default_rng(1)
    n = 80
    pred = np.exp(rng.uniform(0, 4, n))
    shape = rng.uniform(0, 1, (n, 7))
    # this "hardware" runs dense convolutions faster and grouped ones slower than the base predicts
    true = pred * np.exp(-0.4 * shape[:, 3] + 0.3 * shape[:, 4] + rng.normal(0, 0.02, n))
    err = lambda cal, k: np.mean(np.abs(apply(cal, pred[k:], shape[k:]) - true[k:]) / true[k:])  # noqa: E731
    loglin = fit_method("loglinear", pred[:60], true[:60], shape[:60])
    desc = fit_method("descriptors", pred[:60], true[:60], shape[:60])
    assert err(desc, 60) < 0.04 < 0.08 < err(loglin, 60)
    assert desc["weights"][4] < 0 < desc["weights"][5]  # columns: log base latency, then the shape
    far = shape[:1].copy()
    far[0, 3] = -50.0  # unlike every calibration row: the correction stays within what was fitted
    ratio = apply(desc, pred[:1], far) / apply({**desc, "weights": [0.0] * 8}, pred[:1], far)
    assert np.exp(desc["clip"][0]) - 1e-9 <= ratio[0] <= np.exp(desc["clip"][1]) + 1e-9
    assert fit_method("descriptors", pred[:5], true[:5], shape[:5]).keys() == loglin.keys()  # too few rows


def test_estimate_applies_a_shape_correction(user_dir):
    from narformer_tvm.graph.onnx_graph import build_graph
    from narformer_tvm.model.calibrated import SHAPE, calibrated_latency, shape_descriptors

    shipped = list_profiles()["cpu-onnxruntime"]
    cal = {"method": "descriptors", "log_scale": 0.1, "exponent": 1.0, "weights": [0.0, 0.0, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0],
           "mean": [0.0] * 8, "std": [1.0] * 8, "clip": [-1.0, 1.0]}
    folder = user_dir / "mine-shape"
    folder.mkdir(parents=True)
    (folder / "profile.json").write_text(json.dumps({
        "name": "mine-shape", "kind": "user", "onnx": "predictor.onnx", "config": MeasureConfig().identity(),
        "fingerprint": fingerprint(MeasureConfig(), get_backend("onnxruntime")), "calibration": cal}))
    (folder / "predictor.onnx").write_bytes((shipped / "predictor.onnx").read_bytes())
    run = lambda name: json.loads(CliRunner().invoke(  # noqa: E731
        cli, ["estimate", "examples/squeezenet1_1.onnx", "--json", "--predictor", name]).stdout)["results"][0]
    base, mine = run("cpu-onnxruntime")["latency_ms"], run("mine-shape")["latency_ms"]
    pred = load_profile_predictor("cpu-onnxruntime")
    shape = shape_descriptors(pred.encode([build_graph("examples/squeezenet1_1.onnx")]))
    assert len(SHAPE) == shape.shape[1] and 0.5 < shape[0, 3] <= 1.0  # squeezenet: dense convolutions
    want = calibrated_latency(cal, np.array([base]), shape)[0]
    assert mine == pytest.approx(want, rel=1e-3) and mine > 1.15 * base  # exp(0.1 + 0.3 x dense share)


def test_the_unadapted_base_is_a_candidate_only_on_its_own_cpu_and_configuration():
    meta = json.loads((list_profiles()["cpu-onnxruntime"] / "profile.json").read_text())
    fp, config = dict(meta["fingerprint"]), dict(meta["config"])
    assert candidate_methods(meta, {**fp, "python": "other"}, config) == METHODS  # not the hardware
    assert "base" not in candidate_methods(meta, {**fp, "cpu_id": "GenuineIntel family 6 model 167"}, config)
    assert "base" not in candidate_methods(meta, fp, {**config, "threads": 1})
    assert "base" not in candidate_methods(meta, fp, config, "int8-qdq")
    assert candidate_methods(meta, fp, config)[1:] == ("scaled", "loglinear", "descriptors")


def test_a_complex_adaptation_is_kept_only_when_it_wins_beyond_chance():
    base = np.array([0.10, 0.12, 0.08, 0.30])
    lucky = {"base": base, "scaled": base + 0.01, "scratch": np.array([0.02, 0.25, 0.01, 0.22])}
    assert lucky["scratch"].mean() < base.mean() and choose(lucky) == "base"  # 4 rows: a lower mean by chance
    rng = np.random.default_rng(0)
    base = np.abs(rng.normal(0.10, 0.03, 60))
    clear = {"base": base, "scaled": 0.5 * base, "finetune": 0.3 * base}
    assert choose(clear) == "finetune"
    assert choose({"base": base, "scaled": base - 0.001 * rng.random(60), "loglinear": 0.5 * base}) == "loglinear"


def _calibration_db(tmp_path, times: list[str], probes: list | None = None):
    """A calibration dataset of small conv networks measured at ``times`` (HH:MM), each row with its regime
    probes where ``probes`` gives them."""
    import onnx
    from conftest import conv_model

    from narformer_tvm.data.store import Store
    from narformer_tvm.graph.onnx_graph import build_graph
    from narformer_tvm.graph.tokens import table
    from narformer_tvm.measure.backends import Measurement

    db = tmp_path / "calibration.db"
    with Store(db) as store:
        cid = store.config_id({"runtime": "onnxruntime", "target": "llvm", "threads": 2}, {"cpu": "x"})
        for i, at in enumerate(times):
            onnx.save(conv_model(dims=(1, 3, 8 + 8 * i, 8)), tmp_path / f"m{i}.onnx")
            g = build_graph(tmp_path / f"m{i}.onnx")
            mid = store.add_model(f"m{i}", f"m{i}", table(g), {"macs": g.macs, "batch_size": 1}, family="conv")
            info = {"probe_ms": probes[i]} if probes else {}
            store.add_measurement(mid, cid, Measurement(blocks=[[4.0] * 3] * 3, info=info))
            store.db.execute("UPDATE measurements SET measured_at=? WHERE model_id=?", (f"2026-01-01T{at}:00", mid))
        store.db.commit()
    return db, cid


def test_calibration_labels_are_brought_to_the_reference_networks_level(tmp_path):
    from narformer_tvm.data.store import Store
    from narformer_tvm.learn.samples import load_samples

    # rows at 10:00, 10:05, 10:10; the reference network 1 ms at 10:00, 2 ms at 10:10
    db, cid = _calibration_db(tmp_path, ["10:00", "10:05", "10:10"])
    with Store(db) as store:
        for at, ms in (("10:00", 1.0), ("10:10", 2.0)):
            store.add_reference(cid, ms, 0.01)
            store.db.execute("UPDATE reference SET measured_at=? WHERE id=(SELECT MAX(id) FROM reference)",
                             (f"2026-01-01T{at}:00",))
        store.db.commit()
    samples, _ = load_samples(db)
    level = reference_levels(db, samples)
    assert list(level) == pytest.approx([1.0, 1.5, 2.0])  # interpolated between the checks
    fixed = level_corrected(samples, level)  # to the median level, 1.5 ms: the machine twice as slow at the end
    assert [s.latency_ms for s in fixed] == pytest.approx([s.latency_ms * 1.5 / lv for s, lv in zip(samples, level)])
    assert fixed[1].latency_ms == pytest.approx(samples[1].latency_ms) and fixed[0].latency_ms > samples[0].latency_ms
    with Store(db) as store:  # one check says nothing about a drift: the labels stay as measured
        store.db.execute("DELETE FROM reference WHERE latency_ms = 2.0")
        store.db.commit()
    assert reference_levels(db, samples) is None and level_corrected(samples, None) is samples


def test_the_probe_level_is_the_median_of_the_quicker_probes_of_the_rows_around(tmp_path):
    from narformer_tvm.data.store import Store
    from narformer_tvm.learn.samples import load_samples

    # measured in the reverse order of the rows' ids; by time the quicker probes are 1.0, 3.0, 1.2, 1.1, 2.0 ms
    quicker = [1.0, 3.0, 1.2, 1.1, 2.0]
    times = [f"10:{9 - i:02d}" for i in range(5)]
    db, _ = _calibration_db(tmp_path, times, [[q + 0.5, q] for q in reversed(quicker)])
    samples, _ = load_samples(db)
    by_time = sorted(samples, key=lambda s: times[int(s.name[1:])])
    level = dict(zip([s.key for s in samples], probe_levels(db, samples, window=3)))
    # a row's level: the median over the row and its neighbours in time, fewer at the ends
    assert [level[s.key] for s in by_time] == pytest.approx([2.0, 1.2, 1.2, 1.2, 1.55])
    assert list(label_levels(db, samples)) == list(probe_levels(db, samples))  # calibrate's choice where rows have probes
    (tmp_path / "plain").mkdir()
    plain, cid = _calibration_db(tmp_path / "plain", times[:2])
    assert probe_levels(plain, load_samples(plain)[0]) is None  # a sweep without the regime gate
    with Store(plain) as store:  # ... falls back on the reference network's checks
        for ms in (1.0, 2.0):
            store.add_reference(cid, ms, 0.01)
        store.db.commit()
    plain_samples = load_samples(plain)[0]
    assert list(label_levels(plain, plain_samples)) == list(reference_levels(plain, plain_samples))


def test_budgets_parse_and_bad_ones_are_refused():
    assert parse_budget("10m") == 600 and parse_budget("1h30m") == 5400 and parse_budget("90") == 90
    with pytest.raises(click.BadParameter, match="not a duration"):
        parse_budget("ten minutes")
    with pytest.raises(click.BadParameter) as bad:
        parse_budget("soon", "--warm-up")
    assert "--warm-up" in bad.value.format_message() and parse_budget("0", "--warm-up") == 0


def test_the_calibration_set_is_spread_over_families():
    vs = calibration_variants()
    assert len(vs) >= 200 and len({v.family for v in vs[:40]}) >= 12  # a short budget already covers many
    assert all(v.seed >= 0 for v in vs)  # no published network: they are what a calibration is judged on
    # a short budget already spans the latencies of real networks (on the base's hardware), not only small models
    ms = [d["profile_ms"] for d in json.loads(CALIBRATION_SET.read_text())[:100]]
    assert sum(m >= 40 for m in ms) >= 15 and max(ms) >= 100 and min(ms) >= 1.0


def test_calibrate_end_to_end_resumes_and_estimate_prefers_the_result(user_dir):
    cfg = MeasureConfig(**FAST)
    with pytest.raises(InputError, match="calibration models measured"):  # out of budget almost at once
        calibrate(cfg, "cpu-onnxruntime", budget_s=1.0, limit=16, gate_wait_s=0)
    name = "cpu-onnxruntime-calibrated-onnxruntime-llvm-%dt" % cfg.resolved_threads()
    db = user_dir / name / "calibration.db"
    from narformer_tvm.data.store import Store

    with Store(db, readonly=True) as s:
        first = s.db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
        checks = s.db.execute("SELECT COUNT(*) FROM reference WHERE latency_ms > 0").fetchone()[0]
    assert 1 <= first < 16 and checks == 2  # the reference network before the first model and at the end
    with Store(db) as s:  # as if the machine ran twice as fast when calibrating began
        s.db.execute("UPDATE reference SET latency_ms = latency_ms / 2 WHERE id = (SELECT MIN(id) FROM reference)")
        s.db.commit()
    # goes on from there (rows measured beside other work may be flagged noisy: use them too)
    # two folds: four trainings, two at a time on two cores
    result = calibrate(cfg, "cpu-onnxruntime", budget_s=600, limit=16, gate_wait_s=0, include_noisy=True, folds=2,
                       warm_up_s=1.0)
    with Store(db, readonly=True) as s:
        rows, models = s.db.execute("SELECT COUNT(*), COUNT(DISTINCT model_id) FROM measurements").fetchone()
    assert rows == models == 16  # nothing measured twice
    assert result.measured >= 12 and result.left == 0
    assert len(result.drift) == 2 and all("at the first check" in d for d in result.drift)  # the resumed run's two
    said = {}
    for drift in (result.drift, []):
        con = Console(record=True, width=300)
        print_result(con, replace(result, drift=drift))
        said[bool(drift)] = con.export_text()
    assert "(2 checks off by more than 10%)" in said[True] and "calibrate on a quiet machine" in said[True]
    assert "drift" not in said[False] and "Expected accuracy here" in said[False]
    assert 1.0 <= result.warm_up_s < result.profiled_s and "of them warming up" in said[False]
    maps = candidate_methods(json.loads((list_profiles()["cpu-onnxruntime"] / "profile.json").read_text()),
                             fingerprint(cfg, get_backend("onnxruntime")), cfg.identity())
    assert set(result.validation) == {*maps, "finetune", "scratch"}  # torch, a checkout
    meta = json.loads((user_dir / name / "profile.json").read_text())
    assert meta["kind"] == "user" and meta["calibration"]["method"] == result.calibration["method"]
    assert meta["drift"] == result.drift  # kept with the profile: it was calibrated on a moving machine
    assert meta["metrics"]["n"] == result.test["n"] > 0 and meta["onnx"] == "predictor.onnx"
    assert list_profiles()[name] == user_dir / name and default_profile() == name  # user before shipped
    assert default_profile(include_user=False) != name  # what a new calibration starts from
    pred = load_profile_predictor(None)
    assert pred.profile["name"] == name and pred.profile["fingerprint"] == meta["fingerprint"]
    res = CliRunner().invoke(cli, ["estimate", "examples/squeezenet1_1.onnx", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["profile"]["name"] == name
    base = CliRunner().invoke(cli, ["estimate", "examples/squeezenet1_1.onnx", "--json", "--predictor",
                                    "cpu-onnxruntime"])
    ratio = out["results"][0]["latency_ms"] / json.loads(base.stdout)["results"][0]["latency_ms"]
    if result.calibration["method"] in ("finetune", "scratch"):  # its own weights, exported
        assert (user_dir / name / "predictor.onnx").read_bytes() != (
            list_profiles()["cpu-onnxruntime"] / "predictor.onnx").read_bytes()
    elif result.calibration["exponent"] == 1.0:  # the base's output times one factor
        assert abs(ratio - float(apply(result.calibration, np.array([1.0]))[0])) < 1e-3
    listed = CliRunner().invoke(cli, ["profiles", "list", "--json"])
    assert {r["name"]: r["drift"] for r in json.loads(listed.stdout)}[name] == result.drift
    assert "drifted" in CliRunner().invoke(cli, ["profiles", "list"]).stdout


def test_finetuning_fits_what_one_factor_cannot():
    from narformer_tvm.calibrate import _predict, finetune, finetune_checkpoint
    from narformer_tvm.learn.samples import load_samples
    from narformer_tvm.learn.train import recalibrate
    from narformer_tvm.model.predictor import Predictor

    samples, _ = load_samples(list_profiles()["cpu-onnxruntime"] / "published")
    samples = sorted(samples, key=lambda s: len(s.table.ops))[:12]  # the small ones: a quick test
    ckpt = finetune_checkpoint("cpu-onnxruntime")
    assert ckpt is not None and ckpt.suffix == ".pt"
    base = _predict(Predictor.load(ckpt), samples)
    # this "hardware" runs plain convolution stacks 2.5x slower than the base predicts, the rest as predicted
    plain = ("resnet", "resnext", "vgg")
    samples = [replace(s, latency_ms=float(p * (2.5 if any(d in s.name for d in plain) else 1.0)))
               for s, p in zip(samples, base)]
    assert 3 <= sum(any(d in s.name for d in plain) for s in samples) <= 9
    err = lambda p: float(np.mean(np.abs(p - [s.latency_ms for s in samples]) / [s.latency_ms for s in samples]))  # noqa: E731
    scaled = err(_predict(recalibrate(Predictor.load(ckpt), samples), samples))
    tuned = finetune(ckpt, samples * 4, samples)  # repeated: the optimiser steps of ~50 models
    assert err(_predict(tuned, samples)) < 0.5 * scaled


def test_a_profile_for_another_configuration_is_not_the_default_and_cannot_be_a_base(user_dir):
    folder = user_dir / "mine-1t"
    folder.mkdir(parents=True)
    shipped = json.loads((list_profiles()["cpu-onnxruntime"] / "profile.json").read_text())

    cfg = MeasureConfig(threads=1)
    (folder / "profile.json").write_text(json.dumps({
        "name": "mine-1t", "kind": "user", "onnx": "predictor.onnx", "config": cfg.identity(),
        "fingerprint": fingerprint(cfg, get_backend("onnxruntime")),
        "calibration": {"method": "scaled", "log_scale": 0.5, "exponent": 1.0}}))
    (folder / "predictor.onnx").write_bytes((list_profiles()["cpu-onnxruntime"] / shipped["onnx"]).read_bytes())
    assert default_profile() != "mine-1t"  # one thread: not what a plain estimate asks for
    res = CliRunner().invoke(cli, ["estimate", "examples/squeezenet1_1.onnx", "--predictor", "mine-1t"])
    assert res.exit_code == 0 and "describes ONNX Runtime with threads 1" in res.stderr
    # the default configuration, but for int8 models: not the default either, and said so when chosen
    meta = json.loads((folder / "profile.json").read_text())
    meta.update(config=MeasureConfig().identity(), variant="int8-qdq", name="mine-int8")
    (folder / "profile.json").write_text(json.dumps(meta))
    assert default_profile() != "mine-1t"
    res = CliRunner().invoke(cli, ["estimate", "examples/squeezenet1_1.onnx", "--predictor", "mine-1t"])
    assert res.exit_code == 0 and "models made int8-qdq" in res.stderr
    listed = CliRunner().invoke(cli, ["profiles", "list"])
    assert "int8-qdq models" in listed.stdout
    with pytest.raises(InputError, match="itself a calibrated profile"):
        calibrate(MeasureConfig(**FAST), "mine-1t", budget_s=1, limit=2)


def test_the_latest_calibration_of_this_machine_is_the_default(user_dir):

    shipped = json.loads((list_profiles()["cpu-onnxruntime"] / "profile.json").read_text())
    cfg = MeasureConfig()
    for name, when in (("a-older", "2026-12-01T10:00:00"), ("b-newer", "2026-12-02T10:00:00")):
        folder = user_dir / name
        folder.mkdir(parents=True)
        (folder / "profile.json").write_text(json.dumps({
            "name": name, "kind": "user", "onnx": "predictor.onnx", "config": cfg.identity(),
            "fingerprint": fingerprint(cfg, get_backend("onnxruntime")), "calibrated_at": when,
            "calibration": {"method": "scaled", "log_scale": 0.0, "exponent": 1.0}}))
        (folder / "predictor.onnx").write_bytes((list_profiles()["cpu-onnxruntime"] / shipped["onnx"]).read_bytes())
    assert default_profile() == "b-newer"  # not the first listed
    assert default_profile(include_user=False) in ("cpu-onnxruntime", "cpu-onnxruntime-zen5")
