import json

import numpy as np
import pytest

from narformer_tvm.errors import CheckpointError
from narformer_tvm.integrations.ort_config_ratio import (
    GRAPH_FEATURES,
    RatioModel,
    RatioPredictor,
    graph_descriptors,
    ratio_samples,
)
from narformer_tvm.integrations.ort_tuning import Candidate, is_default, predict_candidates, search_space


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """Graph tables of three small networks built here: plain convolutions, depthwise ones, MatMuls."""
    import torch
    from torch import nn

    from narformer_tvm.graph.onnx_graph import build_graph
    from narformer_tvm.graph.tokens import table
    from narformer_tvm.measure.families import export_onnx

    torch.manual_seed(0)
    nets = {"conv": nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1)),
            "depthwise": nn.Sequential(nn.Conv2d(3, 32, 1), nn.Conv2d(32, 32, 3, padding=1, groups=32)),
            "matmul": nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 64), nn.ReLU(), nn.Linear(64, 10))}
    out, paths = {}, {}
    folder = tmp_path_factory.mktemp("ratio")
    for name, net in nets.items():
        paths[name] = folder / f"{name}.onnx"
        export_onnx(net.eval(), paths[name], resolution=16)
        out[name] = table(build_graph(str(paths[name])))
    return out, paths


def test_graph_descriptors_say_where_the_flops_are(graphs):
    tables, _ = graphs
    d = {k: dict(zip(GRAPH_FEATURES, graph_descriptors(t))) for k, t in tables.items()}
    assert d["conv"]["conv_share"] > 0.99 and d["conv"]["matmul_share"] == 0
    assert d["depthwise"]["grouped_conv_share"] > 0.1
    assert d["matmul"]["matmul_share"] > 0.99


def truth(name: str, c: Candidate) -> float:
    """A made-up machine: one thread halves the conv net's speed only, int8 helps MatMuls most."""
    r = 1.0
    if c.threads == 1:
        r *= 1.9 if name == "conv" else 1.2
    if c.variant == "int8-qdq":
        r *= 0.5 if name == "matmul" else 0.9
    if c.opt_level == "disabled":
        r *= 1.3
    return r


def test_the_fit_recovers_ratios_that_depend_on_the_graph_and_round_trips(graphs, tmp_path):
    tables, _ = graphs
    space = [c for c in search_space("llvm", 2) if not is_default(c)]
    rows = [(t, c, truth(name, c)) for name, t in tables.items() for c in space]
    model = RatioModel.fit(rows, cores=2, l2=1e-3)
    assert model.rows == len(rows) and model.models == 3 and model.sigma < 0.05
    for name, t in tables.items():
        pred = model.predict(t, space)
        want = np.array([truth(name, c) for c in space])
        assert np.max(np.abs(np.log2(pred / want))) < 0.15, name
    default = next(c for c in search_space("llvm", 2) if is_default(c))
    assert model.predict(tables["conv"], [default])[0] == 1.0
    model.save(tmp_path / "r.json")
    again = RatioModel.load(tmp_path / "r.json")
    assert np.allclose(again.predict(tables["matmul"], space), model.predict(tables["matmul"], space))
    (tmp_path / "bad.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CheckpointError, match="not a configuration-ratio model"):
        RatioModel.load(tmp_path / "bad.json")


def test_a_ratio_predictor_ranks_tune_ort_candidates(graphs, tmp_path):
    from narformer_tvm.model.predictor import new_predictor

    tables, paths = graphs
    space = [c for c in search_space("llvm", 2) if not is_default(c)]
    model = RatioModel.fit([(t, c, truth(name, c)) for name, t in tables.items() for c in space], 2, l2=1e-3)
    base = new_predictor(d_model=32, n_layers=1)
    ranked = predict_candidates(paths["conv"], RatioPredictor(model, base), search_space("llvm", 2), tmp_path)
    by = {r.candidate: r for r in ranked}
    default = next(c for c in by if is_default(c))
    one_thread = Candidate("fp32", 1)
    assert by[one_thread].predicted_ms > 1.5 * by[default].predicted_ms
    assert all(r.spread > 0 for r in ranked)


def test_ratio_samples_pair_each_candidate_row_with_its_models_default(graphs, tmp_path):
    from click.testing import CliRunner

    from narformer_tvm.cli.main import cli

    _, paths = graphs
    db = tmp_path / "cand.db"
    res = CliRunner().invoke(cli, ["profile", str(paths["conv"]), "--db", str(db), "--ort-candidates", "2",
                                   "--regime-wait", "0"])
    assert res.exit_code == 0, res.output
    samples = ratio_samples(db, include_noisy=True)
    assert len(samples) == 2 and all(s[2] > 0 for s in samples) and len({s[3] for s in samples}) == 1
    assert not any(is_default(s[1]) for s in samples)


def test_the_shipped_cpu_profile_ranks_with_ratios_and_its_narformer_still_loads(graphs, tmp_path):
    from narformer_tvm.model.predictor import Predictor
    from narformer_tvm.profiles import list_profiles, load_ort_predictor

    _, paths = graphs
    folder = list_profiles()["cpu-onnxruntime"]
    pred = load_ort_predictor("cpu-onnxruntime")
    assert isinstance(pred, RatioPredictor) and pred.ratios.models >= 50
    ranked = predict_candidates(paths["conv"], pred, search_space("llvm", 2, lossy=False), tmp_path / "a")
    assert len(ranked) == 32 and all(np.isfinite(r.predicted_ms) and r.predicted_ms > 0 for r in ranked)
    nar = load_ort_predictor(str(folder / "ort-configs.pt"))
    assert isinstance(nar, Predictor)
    ranked = predict_candidates(paths["conv"], nar, search_space("llvm", 2), tmp_path / "b")
    assert len(ranked) == 64 and all(np.isfinite(r.predicted_ms) for r in ranked)
