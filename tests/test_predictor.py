import numpy as np
import pytest
import torch

from narformer_tvm.errors import CheckpointError, PredictorNotFoundError
from narformer_tvm.graph.onnx_graph import build_graph
from narformer_tvm.graph.tokens import FeatureConfig
from narformer_tvm.model.predictor import (
    CHECKPOINT_VERSION,
    Predictor,
    TargetNorm,
    merge_predictors,
    new_predictor,
)


def small(**kw) -> Predictor:
    return new_predictor(FeatureConfig(n_freqs=4), d_model=32, n_groups=4, **kw)


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path, exported):
    graphs = [build_graph(exported(n)) for n in ("resnet18", "mobilenet_v2", "vit_b_16")]
    p = small(ensemble=2)
    with torch.no_grad():  # fresh heads start at zero: make the members disagree, as trained ones do
        p.models[1].head[-1].weight.normal_(0, 0.1)
    p.target = TargetNorm("ratio", 3.5)
    p.profile = {"name": "test", "target": "llvm"}
    p.save(tmp_path / "p.pt")
    q = Predictor.load(tmp_path / "p.pt")
    assert q.profile == p.profile and q.target == p.target and q.features == p.features
    assert q.config == p.config and len(q.models) == 2
    np.testing.assert_array_equal(p.predict(graphs), q.predict(graphs))
    mean, std = q.predict_encoded(q.encode(graphs))
    assert (mean > 0).all() and (std > 0).all()


def _tamper(src, dst, **changes):
    state = torch.load(src, weights_only=True)
    for k, v in changes.items():
        if "." in k:
            outer, inner = k.split(".")
            state[outer][inner] = v
        else:
            state[k] = v
    torch.save(state, dst)


def test_version_and_vocabulary_mismatch_fail_clearly(tmp_path):
    small().save(tmp_path / "p.pt")
    _tamper(tmp_path / "p.pt", tmp_path / "v.pt", version=CHECKPOINT_VERSION + 1)
    with pytest.raises(CheckpointError, match=f"format version {CHECKPOINT_VERSION + 1}"):
        Predictor.load(tmp_path / "v.pt")
    _tamper(tmp_path / "p.pt", tmp_path / "f.pt", **{"features.version": 99})
    with pytest.raises(CheckpointError, match="feature encoding v99"):
        Predictor.load(tmp_path / "f.pt")
    with pytest.raises(CheckpointError, match="op vocabulary differs"):
        Predictor.load(tmp_path / "p.pt", vocab=("Conv", "Relu"))
    p = Predictor.load(tmp_path / "p.pt", vocab=FeatureConfig().vocab)
    state = torch.load(tmp_path / "p.pt", weights_only=True)
    _tamper(tmp_path / "p.pt", tmp_path / "w.pt", **{"features.vocab": state["features"]["vocab"][:-1]})
    with pytest.raises(CheckpointError, match="weights take"):
        Predictor.load(tmp_path / "w.pt")
    assert p.features.vocab == FeatureConfig().vocab


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable predictor checkpoint"):
        Predictor.load(tmp_path / "junk.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a narformer-tvm predictor"):
        Predictor.load(tmp_path / "other.pt")
    with pytest.raises(PredictorNotFoundError):
        Predictor.load(tmp_path / "missing.pt")


def test_target_norm_inverts():
    t = TargetNorm("ratio", 2.0)
    np.testing.assert_allclose(t.decode(t.encode(np.array([0.1, 2.0, 50.0]))), [0.1, 2.0, 50.0])


def test_predictors_of_other_target_scales_merge_into_one_ensemble(exported):
    graphs = [build_graph(exported(n)) for n in ("resnet18", "mobilenet_v2")]
    folds = [small(seed=k) for k in range(3)]
    for k, p in enumerate(folds):  # one per cross-validation fold: each its own median, its own weights
        p.target = TargetNorm("ratio", 1.5 * (k + 1))
        with torch.no_grad():
            p.models[0].head[-1].weight.normal_(0, 0.1)
    merged = merge_predictors(folds)
    assert len(merged.models) == 3 and merged.target.scale == pytest.approx((1.5 * 3.0 * 4.5) ** (1 / 3))
    expected = np.mean([p.predict(graphs) for p in folds], axis=0)
    np.testing.assert_allclose(merged.predict(graphs), expected, rtol=1e-5)
    other = new_predictor(FeatureConfig(n_freqs=4), d_model=16, n_groups=4)
    with pytest.raises(ValueError, match="one feature encoding and model shape"):
        merge_predictors([folds[0], other])
