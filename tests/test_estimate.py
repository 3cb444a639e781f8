"""The predictor that ships with the package, checked against measurements committed beside it."""
import json
from pathlib import Path

import pytest

from narformer_tvm.estimate import resolve_predictor
from narformer_tvm.metrics import summary
from narformer_tvm.predictor import Predictor
from narformer_tvm.train import load_samples, predict_samples, split_same_distribution

PROFILE = Path(__file__).resolve().parents[1] / "profiles" / "cpu-onnxruntime"
META = json.loads((PROFILE / "profile.json").read_text())


def test_default_profile_is_the_shipped_one():
    assert resolve_predictor(None).resolve() == PROFILE / META["predictor"]


def test_shipped_predictor_reproduces_its_reported_test_error():
    """The held-out last 10% of each family of the committed dataset: the split profile.json reports on."""
    samples, _ = load_samples(PROFILE / "dataset.db")
    test = [samples[i] for i in split_same_distribution(samples)[1]]
    m = summary(predict_samples(Predictor.load(PROFILE / META["predictor"]), test)[0], [s.latency_ms for s in test])
    # The dataset may have grown since training (new variants join each family's tail): allow a little.
    assert m["mape"] <= 1.1 * META["metrics"]["mape"]
    assert m["kendall_tau"] >= META["metrics"]["kendall_tau"] - 0.02


@pytest.mark.skipif(not (PROFILE / "published.db").exists(), reason="no measured published networks")
def test_shipped_predictor_on_measured_published_networks():
    """ResNet-50, MobileNetV2, ViT-B/16, ... exported from our torch code and measured on this hardware."""
    samples, _ = load_samples(PROFILE / "published.db")
    m = summary(predict_samples(Predictor.load(PROFILE / META["predictor"]), samples)[0],
                [s.latency_ms for s in samples])
    assert "published" in META, "profile.json lacks the published-network metrics this dataset backs"
    assert m["n"] == META["published"]["n"] and m["mape"] == pytest.approx(META["published"]["mape"], rel=1e-3)
