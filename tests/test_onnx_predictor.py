import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from narformer_tvm.errors import CheckpointError, PredictorNotFoundError
from narformer_tvm.graph.onnx_graph import build_graph
from narformer_tvm.graph.tokens import FeatureConfig
from narformer_tvm.model.export import export_onnx
from narformer_tvm.model.load import load_predictor
from narformer_tvm.model.onnx_predictor import OnnxPredictor
from narformer_tvm.model.predictor import Predictor, TargetNorm, new_predictor


def trained_like(readout: str = "sum", ensemble: int = 2) -> Predictor:
    p = new_predictor(FeatureConfig(n_freqs=4), ensemble=ensemble, d_model=32, n_groups=4, readout=readout)
    with torch.no_grad():  # fresh heads start at zero: give every member weights of its own, as training does
        for k, m in enumerate(p.models):
            for w in m.parameters():
                w.add_(torch.randn_like(w) * 0.05 * (k + 1))
    p.target = TargetNorm("ratio", 2.5)
    p.profile = {"name": "unit", "target": "llvm"}
    return p


@pytest.mark.parametrize("readout", ["sum", "flops_mac", "node_cost"])
def test_onnx_export_predicts_as_the_torch_model(tmp_path, exported, readout):
    graphs = [build_graph(exported(n)) for n in ("resnet18", "mobilenet_v2", "vit_b_16")]
    p = trained_like(readout)
    if readout == "flops_mac":
        p.models[0].prior_w.copy_(torch.tensor([0.5, 2.0, 0.1], dtype=p.models[0].prior_w.dtype))
        p.models[1].prior_w.copy_(torch.tensor([0.4, 3.0, 0.2], dtype=p.models[1].prior_w.dtype))
    want_mean, want_std = p.predict_encoded(p.encode(graphs))
    exact = OnnxPredictor.load(export_onnx(p, tmp_path / "fp32.onnx", fp16=False))
    mean, std = exact.predict_encoded(exact.encode(graphs))
    np.testing.assert_allclose(mean, want_mean, rtol=1e-4)
    np.testing.assert_allclose(std, want_std, rtol=1e-3, atol=1e-6)
    half = OnnxPredictor.load(export_onnx(p, tmp_path / "fp16.onnx"))
    np.testing.assert_allclose(half.predict(graphs), want_mean, rtol=5e-3)  # float16 weights: far below label noise
    assert (tmp_path / "fp16.onnx").stat().st_size < 0.75 * (tmp_path / "fp32.onnx").stat().st_size  # graph overhead
    assert half.profile == p.profile and half.features == p.features


def test_load_predictor_picks_the_runner_by_file_kind(tmp_path):
    p = trained_like(ensemble=1)
    p.save(tmp_path / "p.pt")
    export_onnx(p, tmp_path / "p.onnx")
    assert isinstance(load_predictor(tmp_path / "p.pt"), Predictor)
    assert isinstance(load_predictor(tmp_path / "p.onnx"), OnnxPredictor)


def test_foreign_or_missing_onnx_files_are_refused_clearly(tmp_path, conv_onnx):
    with pytest.raises(CheckpointError, match="not a narformer-tvm predictor"):
        OnnxPredictor.load(conv_onnx)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable ONNX predictor"):
        OnnxPredictor.load(tmp_path / "junk.onnx")
    with pytest.raises(PredictorNotFoundError):
        OnnxPredictor.load(tmp_path / "missing.onnx")
    p = trained_like(ensemble=1)
    model = onnx.load(export_onnx(p, tmp_path / "p.onnx"))
    meta = json.loads(model.metadata_props[0].value)
    meta["version"] = 99
    model.metadata_props[0].value = json.dumps(meta)
    onnx.save(model, tmp_path / "future.onnx")
    with pytest.raises(CheckpointError, match="version 99"):
        OnnxPredictor.load(tmp_path / "future.onnx")


def test_estimate_with_a_shipped_profile_never_imports_torch():
    code = ("import sys\nfrom narformer_tvm.cli.main import main\n"
            "try:\n    main(['estimate', sys.argv[1]])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules, 'estimate imported torch'\nprint('no torch')")
    example = Path(__file__).resolve().parent.parent / "examples" / "squeezenet1_1.onnx"
    proc = subprocess.run([sys.executable, "-c", code, str(example)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "no torch" in proc.stdout and " ms" in proc.stdout
