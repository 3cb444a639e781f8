"""The predictors that ship with the package, checked against measurements committed beside them."""
import json
from pathlib import Path

import numpy as np
import pytest

from narformer_tvm.data.labels import label_options
from narformer_tvm.learn.metrics import summary
from narformer_tvm.learn.samples import load_samples, unseen_in_training
from narformer_tvm.learn.splits import split_same_distribution
from narformer_tvm.learn.train import predict_samples
from narformer_tvm.measure.hardware import hardware
from narformer_tvm.model.load import load_predictor
from narformer_tvm.model.predictor import Predictor
from narformer_tvm.profiles import (
    DEFAULT_PROFILES,
    default_profile,
    fingerprint_mismatch,
    list_profiles,
    resolve_predictor,
)

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
SHIPPED = [name for name in DEFAULT_PROFILES if (PROFILES / name / "profile.json").exists()]


def meta(name: str) -> dict:
    return json.loads((PROFILES / name / "profile.json").read_text())


def test_default_profile_is_a_shipped_one():
    assert SHIPPED == list(DEFAULT_PROFILES)
    name = default_profile()
    assert name in SHIPPED and resolve_predictor(None).resolve() == PROFILES / name / meta(name)["onnx"]
    assert resolve_predictor(None, checkpoint=True).resolve() == PROFILES / name / meta(name)["predictor"]


def _fake_profiles(root: Path, fingerprints: dict[str, dict]) -> None:
    for name, fp in fingerprints.items():
        (root / name).mkdir(parents=True)
        (root / name / "profile.json").write_text(json.dumps({"name": name, "predictor": "predictor.pt",
                                                              "fingerprint": fp}))


def test_default_profile_is_the_one_measured_on_this_hardware(tmp_path, monkeypatch):
    here = hardware()
    other = {**here, "cpu_id": "GenuineIntel family 6 model 143", "cpu_flags": "sse4_2,avx,avx2,fma,amx_tile"}
    first, second = DEFAULT_PROFILES[:2]
    monkeypatch.setenv("NARFORMER_PROFILES", str(tmp_path / "a"))
    _fake_profiles(tmp_path / "a", {first: other, second: here})
    assert default_profile() == second
    monkeypatch.setenv("NARFORMER_PROFILES", str(tmp_path / "b"))
    _fake_profiles(tmp_path / "b", {first: other, second: {**here, "physical_cores": here["physical_cores"] + 8}})
    assert default_profile() == first  # nothing matches: the first, and `estimate` warns
    monkeypatch.setenv("NARFORMER_PROFILES", str(tmp_path / "c"))
    _fake_profiles(tmp_path / "c", {first: {k: here[k] for k in ("cpu", "physical_cores")}, second: here})
    assert default_profile() == first  # older fingerprints lack cpu_id: what they have is compared


def test_fingerprint_mismatch_names_the_cpu_generation():
    from narformer_tvm.graph.tokens import FeatureConfig
    from narformer_tvm.model.predictor import new_predictor

    p = new_predictor(FeatureConfig(n_freqs=2), d_model=16, n_groups=2)
    p.profile = {"name": "zen4", "fingerprint": {**hardware(), "python": "0.0"}}
    assert fingerprint_mismatch(p) is None  # software versions are not hardware
    p.profile["fingerprint"]["cpu_id"] = "AuthenticAMD family 99 model 1"  # no machine this runs on
    warning = fingerprint_mismatch(p)
    assert "'zen4' was trained for other hardware" in warning and "family 99 model 1" in warning
    assert "cpu:" not in warning  # the same model name is not listed as a difference
    assert "`narformer-tvm calibrate --budget 10m`" in warning  # and what to do about it
    p.profile["config"] = {"target": "cuda", "runtime": "onnxruntime"}
    assert "`narformer-tvm calibrate --target cuda --budget 10m`" in fingerprint_mismatch(p)


# What the README states for each shipped profile, rounded up: MAPE on the held-out split of its own
# dataset and on the published networks measured on its hardware. Computed here without the package's metrics.
STATED_MAPE = {"cpu-onnxruntime": {"held_out": 0.052, "published": 0.046},
               "cpu-onnxruntime-zen5": {"held_out": 0.060, "published": 0.052}}


def _mape(pred, samples) -> float:
    y = np.array([s.latency_ms for s in samples])
    return float(np.mean(np.abs(np.asarray(pred) - y) / y))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_predictor_meets_its_stated_held_out_error(name):
    """The held-out last 10% of each family of the committed dataset, as the README reports it."""
    info = meta(name)
    samples, _ = load_samples(PROFILES / name / Path(info["dataset"]).name, **label_options(info))
    test = [samples[i] for i in split_same_distribution(samples)[1]]
    pred = load_predictor(resolve_predictor(name))
    assert len(test) >= 100 and _mape(predict_samples(pred, test)[0], test) <= STATED_MAPE[name]["held_out"]


@pytest.mark.parametrize("name", [n for n in SHIPPED if (PROFILES / n / "published").exists()])
def test_shipped_predictor_on_measured_published_networks(name):
    """ResNet-50, MobileNetV2, ViT-B/16, ... exported from our torch code and measured on that hardware."""
    info = meta(name)
    samples, _ = load_samples(PROFILES / name / "published", **label_options(info))
    unseen, left_out = unseen_in_training(samples, info)  # GoogLeNet, ViT-B/16, ... are zoo variants too
    assert len(samples) == 22 and left_out == 4
    shipped = predict_samples(load_predictor(resolve_predictor(name)), unseen)[0]
    assert _mape(shipped, unseen) <= STATED_MAPE[name]["published"]
    # the ONNX file estimate runs is the checkpoint it was exported from
    checkpoint = predict_samples(Predictor.load(resolve_predictor(name, checkpoint=True)), unseen)[0]
    np.testing.assert_allclose(shipped, checkpoint, rtol=1e-3)


def test_profiles_list_every_shipped_one():
    assert set(SHIPPED) <= set(list_profiles())


def test_a_rewritten_profile_scores_its_new_predictor_on_the_published_networks(tmp_path):
    """Retraining rewrites profile.json: the published-network block must describe the new weights."""
    import shutil

    from narformer_tvm.learn.shipping import PUBLISHED_DB, write_profile
    from narformer_tvm.model.predictor import new_predictor

    src = PROFILES / "cpu-onnxruntime-zen5" / PUBLISHED_DB
    folder = tmp_path / "unit-cpu"
    pred = new_predictor(d_model=16, n_layers=1)
    assert "published" not in json.loads(write_profile(pred, folder).read_text())  # nothing measured: no block
    shutil.copytree(src, folder / PUBLISHED_DB, ignore=shutil.ignore_patterns(".cache.db*"))
    for labels in ("raw", "regime-corrected", "regime-corrected, mean over passes"):  # the labels it learned
        pred.profile["labels"] = labels
        block = json.loads(write_profile(pred, folder).read_text())["published"]
        samples, cfg = load_samples(src, regime_correct=labels != "raw", mean_passes=labels.endswith("passes"))
        assert cfg["labels"] == labels
        expected = summary(predict_samples(Predictor.load(folder / "predictor.pt"), samples)[0],
                           [s.latency_ms for s in samples])
        assert block["dataset"] == PUBLISHED_DB and block["n"] == 22
        assert block["mape"] == pytest.approx(expected["mape"], rel=1e-6)


def test_estimate_warns_when_a_model_lies_outside_the_training_data(tmp_path, capsys):
    """An op type no training model had (Sin after the convolution) makes the prediction an extrapolation."""
    import onnx
    from conftest import conv_model
    from onnx import helper

    from narformer_tvm.cli.main import main

    model = conv_model()
    model.graph.node.append(helper.make_node("Sin", ["y"], ["z"]))
    model.graph.output[0].name = "z"
    onnx.save(model, tmp_path / "sin.onnx")
    onnx.save(conv_model(), tmp_path / "plain.onnx")
    with pytest.raises(SystemExit) as exc:
        main(["estimate", str(tmp_path / "sin.onnx"), str(tmp_path / "plain.onnx"), "--predictor", "cpu-onnxruntime",
              "--json"])
    assert exc.value.code == 0
    captured = capsys.readouterr()
    rows = {Path(r["model"]).name: r for r in json.loads(captured.out)["results"]}
    assert "op types never seen in training: Sin" in rows["sin.onnx"]["outside_training"][0]
    assert "Sin" not in str(rows["plain.onnx"].get("outside_training"))
    assert "sin.onnx: outside what the predictor was trained on" in captured.err


def test_coverage_counts_op_types_per_model_and_the_ranges():
    from narformer_tvm.estimate import coverage, outside_training
    from narformer_tvm.graph.onnx_graph import OpGraph

    samples, _ = load_samples(PROFILES / "cpu-onnxruntime" / "published")
    cov = coverage([s.table for s in samples])
    assert cov["models"] == 22
    assert cov["op_types"] == {op: sum(op in s.table.ops for s in samples) for op in {o for s in samples for o in s.table.ops}}
    assert cov["op_types"]["Conv"] == 22 and cov["op_types"]["Gemm"] < 22
    assert cov["macs"][0] < cov["macs"][1] and cov["nodes"][0] < cov["nodes"][1]
    assert outside_training(OpGraph("g", [], []), None) == []
