"""The fusion rules against what ONNX Runtime really does: the graph it saves after optimising."""
import numpy as np
import pytest

from narformer_tvm.graph.fusion import duplicate_groups, fused_edges
from narformer_tvm.graph.onnx_graph import build_graph
from narformer_tvm.graph.tokens import FeatureConfig, encode_table, table
from narformer_tvm.measure.ort_fusions import check_rules

def _table(path):
    return table(build_graph(path))


def _cnn(tmp_path):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
            self.b = nn.Conv2d(16, 16, 3, padding=1)
            self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU6())
            self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 16, 1), nn.Sigmoid())
            self.pw = nn.Conv2d(16, 16, 1)

        def forward(self, x):
            y = torch.relu(self.b(self.a(x)) + x)  # residual: NCHWc Conv + Add + Relu
            y = self.dw(y)
            y = y * self.se(y)
            y = self.pw(nn.functional.pad(y, (1, 1, 1, 1), "constant", 0.0))  # a zero Pad before a Conv
            return y * torch.sigmoid(y)  # SiLU

    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), Block(), nn.Flatten(), nn.Linear(16 * 18 * 18, 10),
                        nn.ReLU()).eval()
    path = tmp_path / "cnn.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 16, 16),), path, opset_version=17, dynamo=False)
    return path


def _cell(tmp_path):
    """A NAS-cell-like graph: two edges each apply ReLU to the same node, then their own convolution
    (written with onnx.helper: torch's exporter already merges the two ReLUs)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 8, k, k)).astype(np.float32), f"w{k}") for k in (1, 3)]
    weights.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
    nodes = [helper.make_node("Mul", ["x", "two"], ["h"], name="scale"),
             helper.make_node("Relu", ["h"], ["r1"], name="relu1"), helper.make_node("Relu", ["h"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r1", "w1"], ["c1"], name="conv1"),
             helper.make_node("Conv", ["r2", "w3"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c1", "c2"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "cell", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], weights)
    path = tmp_path / "cell.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _transformer(name, tmp_path):
    pytest.importorskip("transformers")
    import torch

    from narformer_tvm.measure import hf_models

    configs = {
        "bert": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
        "gpt2": dict(n_embd=64, n_layer=2, n_head=4),
        "llama": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=128),
        "hf_vit": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                       image_size=64, patch_size=16),
    }
    kind = hf_models.MODEL_TYPES[name].kind
    config = {**configs[name], **({"vocab_size": hf_models.VOCAB} if kind == "text" else {})}
    path = tmp_path / f"{name}.onnx"
    module, x = hf_models.build(name, config), hf_models.example_input(name, 1, 32 if kind == "text" else 64)
    with torch.no_grad():
        torch.onnx.export(module, (x,), path, opset_version=17, dynamo=False)
    return path


@pytest.mark.parametrize("name", ["cnn", "cell", "bert", "gpt2", "llama", "hf_vit"])
def test_rules_name_the_tensors_ort_fuses_away(name, tmp_path):
    path = {"cnn": _cnn, "cell": _cell}.get(name, lambda p: _transformer(name, p))(tmp_path)
    r = check_rules(path)
    assert not r["missed"] and not r["extra"], r
    assert r["fused"] >= (1 if name == "cell" else 4)  # each model has fusions to find


@pytest.mark.parametrize("name", ["cnn", "bert", "llama"])
def test_at_level_basic_only_pads_and_folded_constants_fuse(name, tmp_path):
    path = {"cnn": _cnn}.get(name, lambda p: _transformer(name, p))(tmp_path)
    r = check_rules(path, "basic")
    # ORT's basic level makes a Gemm of most MatMul + bias pairs but not of BERT's attention projections;
    # the stored graph shows no difference, and the rules fuse them all.
    assert not r["missed"] and set(r["extra"]) <= ({"MatMul"} if name == "bert" else set()), r
    t = _table(path)
    assert fused_edges(t, "basic") < fused_edges(t, "extended")
    with pytest.raises(ValueError, match="basic, extended, all"):
        fused_edges(t, "fast")


def test_nchwc_layout_fuses_the_residual_add_and_its_activation(tmp_path):
    r = check_rules(_cnn(tmp_path))
    assert r["ort"] == r["rules"] and r["ort"]["sum"] == 1 and r["ort"]["activation"] >= 3
    t = _table(_cnn(tmp_path))
    assert not fused_edges(t, "extended") >= fused_edges(t, "all")  # the Sum is the layout's


def test_flags_are_two_optional_feature_columns(tmp_path):
    t = _table(_cnn(tmp_path))
    plain, fused = encode_table(t), encode_table(t, FeatureConfig(fusion=True))
    assert fused.x.shape == (plain.x.shape[0], plain.x.shape[1] + 2) == (len(t.ops), FeatureConfig(fusion=True).n_features)
    np.testing.assert_array_equal(fused.x[:, :-2], plain.x)
    flags = fused.x[:, -2:]
    for p, c in fused_edges(t):
        assert flags[p, 0] == 1 and flags[c, 1] == 1
    assert flags[:, 0].sum() == len({p for p, _ in fused_edges(t)} | {i for g in duplicate_groups(t) for i in g[1:]}) < len(t.ops)
    assert FeatureConfig.from_dict(FeatureConfig(fusion=True).to_dict()).fusion
    assert not FeatureConfig.from_dict({k: v for k, v in FeatureConfig().to_dict().items() if k != "fusion"}).fusion
