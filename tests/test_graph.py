import math

import numpy as np
import onnx
import pytest
import torch
from conftest import conv_model
from onnx import TensorProto, helper

from narformer_tvm.errors import InputShapeError, ModelLoadError, UnsupportedOpsetError
from narformer_tvm.graph.onnx_graph import OpGraph, build_graph, parse_input_shapes
from narformer_tvm.graph.tokens import unknown_ops
from narformer_tvm.measure import families

BOOKKEEPING = {"Shape", "Constant", "Identity", "Dropout", "ConstantOfShape"}

SPREAD = ["resnet18", "resnext50_32x4d", "regnetx_400mf", "mobilenet_v2", "mobilenet_v3_small",
          "mobilenet_v3_large", "mnasnet1_0", "efficientnet_b0", "googlenet", "squeezenet1_0", "vgg11",
          "alexnet", "densenet121", "shufflenet_v2_x1_0", "convnext_tiny", "vit_b_16", "swin_t", "nb201_example"]


def torch_macs(model: torch.nn.Module, res: int) -> int:
    """MACs of Conv2d/Linear layers and matmuls, counted by hooks while torch runs the model."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def linear_hook(m, inp, out):
        nonlocal total
        total += out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, torch.nn.Conv2d) else linear_hook)
             for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    matmuls = 0
    orig = torch.Tensor.__matmul__

    def counting_matmul(a, b):
        nonlocal matmuls
        out = orig(a, b)
        matmuls += out.numel() * a.shape[-1]
        return out

    torch.Tensor.__matmul__ = counting_matmul
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, res, res))
    finally:
        torch.Tensor.__matmul__ = orig
        for h in hooks:
            h.remove()
    return total + matmuls


@pytest.mark.parametrize("name", SPREAD)
def test_real_architectures_give_their_real_layers(name, exported):
    g = build_graph(exported(name))
    hist = g.op_histogram()
    assert not BOOKKEEPING & set(hist), f"bookkeeping left in the graph: {hist}"
    assert all(s and all(d > 0 for d in s) for n in g.nodes for s in n.output_shapes), "static shapes"
    for src, dst in g.edges:
        assert 0 <= src < dst < len(g.nodes), "edges follow topological order"
    model, res = families.build_standard(name)
    assert g.macs == torch_macs(model, res)
    assert g.params == pytest.approx(sum(p.numel() for p in model.parameters()), rel=0.01)


@pytest.mark.parametrize("name, published", [("resnet50", 4.1e9), ("mobilenet_v2", 0.30e9), ("resnet18", 1.8e9),
                                             ("vgg16", 15.5e9), ("efficientnet_b0", 0.39e9), ("vit_b_16", 17.6e9)])
def test_macs_match_published_figures(name, published, exported):
    assert build_graph(exported(name)).macs == pytest.approx(published, rel=0.05)


def test_conv_counts_by_hand(conv_onnx):
    g = build_graph(conv_onnx)
    conv, relu = g.nodes
    assert (conv.op_type, relu.op_type) == ("Conv", "Relu")
    macs = 4 * 8 * 8 * 3 * 3 * 3  # Cout*H*W * Cin*kh*kw
    assert conv.macs == macs == g.macs
    assert conv.flops == 2 * macs + 4 * 8 * 8  # plus bias adds
    assert relu.flops == 4 * 8 * 8
    assert conv.params == 4 * 3 * 3 * 3 + 4
    assert conv.memory == 4 * (3 * 64 + 108 + 4 + 4 * 64)
    assert conv.attrs["kernel"] == (3, 3) and conv.attrs["pad"] == (2, 2) and conv.attrs["stride"] == (1, 1)
    assert g.edges == [(0, 1)]


def test_gemm_and_matmul_counts_by_hand():
    w = helper.make_tensor("w", TensorProto.FLOAT, (16, 8), np.zeros(128, np.float32))
    b = helper.make_tensor("b", TensorProto.FLOAT, (8,), np.zeros(8, np.float32))
    nodes = [helper.make_node("MatMul", ["x", "x_t"], ["a"]),  # (2,5,4) @ (2,4,5) -> (2,5,5)
             helper.make_node("Reshape", ["a", "shape"], ["r"]),
             helper.make_node("Gemm", ["r", "w", "b"], ["y"], transB=0)]
    shape = helper.make_tensor("shape", TensorProto.INT64, (2,), [3, 16])  # (50,) elements -> pad: use 3x16
    g = helper.make_graph(nodes, "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, 4]),
                                         helper.make_tensor_value_info("x_t", TensorProto.FLOAT, [2, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, b, shape])
    graph = build_graph(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    mm, _, gemm = graph.nodes
    assert mm.macs == 2 * 6 * 4 * 4
    assert gemm.macs == 3 * 8 * 16 and gemm.params == 16 * 8 + 8
    assert graph.edges == [(0, 1), (1, 2)]


def test_dynamic_batch_resolved_and_scales_costs(tmp_path):
    model = families.build("resnet", depths=(1, 1, 1, 1), widths=(8, 16, 32, 64), stem=8)
    path = tmp_path / "dyn.onnx"
    families.export_onnx(model, path, 64, dynamic_batch=True, opset=13)
    g1, g4 = build_graph(path), build_graph(path, batch_size=4)
    assert g1.batch_size == 1 and g4.batch_size == 4
    assert g4.nodes[0].output_shapes[0][0] == 4
    assert g4.macs == 4 * g1.macs
    assert len(g1.nodes) == len(g4.nodes)


# The TorchScript exporter stops at opset 20; opset 19 and 21 models come from the dynamo exporter.
@pytest.mark.parametrize("opset, dynamo", [(11, False), (13, False), (15, False), (17, False), (18, False),
                                           (20, False), (19, True), (21, True)])
def test_opsets_give_the_same_layers(opset, dynamo, tmp_path):
    model = families.build("mobilenetv2", width=0.25, stages=families.MBV2_STAGES[:3])
    path = tmp_path / f"m{opset}.onnx"
    families.export_onnx(model, path, 32, opset=opset, dynamo=dynamo, dynamic_batch=not dynamo)
    g = build_graph(path)
    assert g.opset == opset
    assert g.macs == torch_macs(model, 32)
    assert {"Conv", "Clip", "Add", "Gemm"} <= set(g.op_histogram()) and not BOOKKEEPING & set(g.op_histogram())


def test_transformer_shape_chains_are_folded(tmp_path):
    """Opset-11 exports of a ViT with a dynamic batch are full of Shape/Gather/Concat chains."""
    model = families.build("vit", patch=8, dim=64, depth=2, heads=4, image=32, classes=10)
    path = tmp_path / "vit.onnx"
    families.export_onnx(model, path, 32, opset=11, dynamic_batch=True)
    raw = onnx.load(path)
    assert sum(n.op_type == "Shape" for n in raw.graph.node) > 0
    g = build_graph(path)
    assert not BOOKKEEPING & set(g.op_histogram())
    assert g.macs == torch_macs(model, 32)


def test_dynamo_and_torchscript_exports_agree(tmp_path):
    model = families.build("resnet", depths=(1, 1), widths=(8, 16), stem=8, classes=10)
    families.export_onnx(model, tmp_path / "ts.onnx", 32)
    families.export_onnx(model, tmp_path / "dy.onnx", 32, dynamo=True)
    ts, dy = build_graph(tmp_path / "ts.onnx"), build_graph(tmp_path / "dy.onnx")
    assert ts.macs == dy.macs
    assert dy.params == pytest.approx(ts.params, rel=0.02)  # exporters fold BatchNorm biases differently
    assert ts.op_histogram()["Conv"] == dy.op_histogram()["Conv"]


def test_weights_absent_or_external_give_the_same_graph(tmp_path):
    model = families.build("resnet", depths=(1, 1), widths=(8, 16), stem=8, classes=10)
    with torch.no_grad():  # distinct values: the exporter merges identical constants (fresh BN biases)
        for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            t.uniform_(0.5, 1.5)
    families.export_onnx(model, tmp_path / "with.onnx", 32)
    families.export_onnx(model, tmp_path / "without.onnx", 32, export_params=False)
    ext = onnx.load(tmp_path / "with.onnx")
    onnx.save(ext, tmp_path / "ext.onnx", save_as_external_data=True, location="ext.data", size_threshold=0)
    (tmp_path / "ext.data").unlink()  # the weights file is gone: shapes still suffice
    ref = build_graph(tmp_path / "with.onnx")
    for other in ("without", "ext"):
        g = build_graph(tmp_path / f"{other}.onnx")
        assert (g.macs, g.params, len(g.nodes), g.edges) == (ref.macs, ref.params, len(ref.nodes), ref.edges)


def test_graph_round_trips_through_dict(conv_onnx):
    g = build_graph(conv_onnx)
    assert OpGraph.from_dict(g.to_dict()) == g


def test_pass_through_nodes_are_rewired():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["b"]),
             helper.make_node("Dropout", ["b"], ["c"]), helper.make_node("Sigmoid", ["c"], ["y"])]
    g = helper.make_graph(nodes, "p", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    graph = build_graph(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    assert [n.op_type for n in graph.nodes] == ["Relu", "Sigmoid"] and graph.edges == [(0, 1)]


def _const_branch_model(data_branch: bool) -> onnx.ModelProto:
    """y = Conv(x, w2) + Conv(zeros, w): the second Conv reads only constants (a NAS cell's 'none' input)."""
    hw = 160  # above FOLD_MAX_ELEMENTS: the shape-bookkeeping fold leaves these tensors alone
    zeros = helper.make_tensor("zeros", TensorProto.FLOAT, [1, 4, hw, hw], np.zeros(4 * hw * hw, dtype=np.float32))
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4, 3, 3], np.ones(144, dtype=np.float32))
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [4, 4, 1, 1], np.ones(16, dtype=np.float32))
    nodes = [helper.make_node("Conv", ["zeros", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"])]
    if data_branch:
        nodes += [helper.make_node("Conv", ["x", "w2"], ["d"]), helper.make_node("Add", ["d", "r"], ["y"])]
    else:
        nodes += [helper.make_node("Add", ["r", "r"], ["y"])]
    g = helper.make_graph(nodes, "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [zeros, w, w2])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_input_independent_operators_are_folded_away():
    """ONNX Runtime folds what does not depend on the input at load time: it costs nothing per run."""
    g = build_graph(_const_branch_model(True))
    assert [n.op_type for n in g.nodes] == ["Conv", "Add"] and g.edges == [(0, 1)]
    assert g.macs == 4 * 160 * 160 * 4  # the 1x1 Conv on x only; the 3x3 Conv on zeros is folded
    assert g.params == 4 * 160 * 160 + 144 + 16  # the folded branch's initializers still belong to the model
    with pytest.raises(ModelLoadError, match="does not depend on any input"):
        build_graph(_const_branch_model(False))


def test_errors_name_the_fault(tmp_path):
    with pytest.raises(UnsupportedOpsetError, match="opset 3"):
        build_graph(conv_model(opset=3))
    with pytest.raises(InputShapeError, match="'x' has dynamic dimension 2"):
        build_graph(conv_model(dims=(1, 3, "h", 8)))
    g = build_graph(conv_model(dims=(1, 3, "h", 8)), input_shapes={"x": (1, 3, 16, 8)})
    assert g.nodes[0].output_shapes == [(1, 4, 16, 8)]
    with pytest.raises(InputShapeError, match="not a model input"):
        build_graph(conv_model(), input_shapes={"nope": (1,)})
    empty = helper.make_model(helper.make_graph([], "e", [], []), opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelLoadError, match="no nodes"):
        build_graph(empty)


def test_parse_input_shapes():
    assert parse_input_shapes(["input=1x3x224x224", "b=2"]) == {"input": (1, 3, 224, 224), "b": (2,)}
    for bad in ["input", "input=1x-3", "=1x3", "x=axb"]:
        with pytest.raises(ModelLoadError, match="bad --input-shape"):
            parse_input_shapes([bad])


def test_one_node_the_reference_runtime_cannot_fold_leaves_the_rest_folded():
    """Transformer exports compute shapes from constants beside nodes onnx's reference runtime fails on
    (GatherElements over position ids): the shapes must still fold, or every MatMul counts 0 MACs."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name, value):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))

    nodes = [
        const("target", np.array([1, 32], np.int64)), const("rank", np.array([2], np.int64)),
        helper.make_node("ConstantOfShape", ["rank"], ["ones"],
                         value=numpy_helper.from_array(np.array([1], np.int64))),
        const("minus", np.array(-1, np.int64)), helper.make_node("Mul", ["ones", "minus"], ["neg"]),
        helper.make_node("Equal", ["target", "neg"], ["eq"]), helper.make_node("Where", ["eq", "ones", "target"], ["shape"]),
        helper.make_node("Expand", ["x", "shape"], ["x2"]),  # (1, 32) once "shape" is folded
        const("positions", np.zeros((1, 512), np.int64)), const("idx", np.arange(32, dtype=np.int64)[None]),
        helper.make_node("GatherElements", ["positions", "idx"], ["gathered"], axis=1),
        helper.make_node("Cast", ["gathered"], ["gathered_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["x2", "gathered_f"], ["x3"]),
        helper.make_node("MatMul", ["x3", "w"], ["y"]),
    ]
    w = numpy_helper.from_array(np.ones((32, 16), np.float32), "w")
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    g = build_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    (matmul,) = [n for n in g.nodes if n.op_type == "MatMul"]
    assert matmul.output_shapes == [(1, 16)] and g.macs == 32 * 16


# Tiny configurations of real architectures from Hugging Face transformers (the `test` extra pins it):
# the exporters' graphs must count the compute torch counts while running the same module.
HF_MODELS = {  # hf_models.MODEL_TYPES name -> configuration
    "bert": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
    "distilbert": dict(dim=64, n_layers=2, n_heads=4, hidden_dim=128),
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4),
    "llama": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128),
    "hf_vit": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=64,
                   patch_size=16),
    "convnext": dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1]),
    "mobilevit": dict(image_size=64),
    "swin": dict(image_size=64, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4),
}


def _hf_model(name):
    pytest.importorskip("transformers")
    from narformer_tvm.measure import hf_models

    kind = hf_models.MODEL_TYPES[name].kind
    config = {**HF_MODELS[name], **({"vocab_size": hf_models.VOCAB} if kind == "text" else {})}
    return hf_models.build(name, config), hf_models.example_input(name, 1, 32 if kind == "text" else 64)


def _torch_macs(module, x) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name", list(HF_MODELS))
def test_transformers_exports_count_the_compute_torch_runs(name, tmp_path):
    import torch

    module, x = _hf_model(name)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(module, (x,), path, input_names=["x"], opset_version=17, dynamo=False)
    g = build_graph(path)
    # BERT and ViT compute a pooler the hidden state does not use: torch runs it, the export drops it
    assert g.macs == pytest.approx(_torch_macs(module, x), rel=0.01) and g.macs > 0
    assert not unknown_ops(g)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "llama", "swin"])
def test_the_dynamo_exporter_gives_the_same_macs(name, tmp_path):
    import torch

    module, x = _hf_model(name)
    torch.onnx.export(module, (x,), tmp_path / "ts.onnx", input_names=["x"], opset_version=17, dynamo=False)
    torch.onnx.export(module, (x,), tmp_path / "dynamo.onnx", input_names=["x"], opset_version=18, dynamo=True)
    assert build_graph(tmp_path / "dynamo.onnx").macs == build_graph(tmp_path / "ts.onnx").macs > 0


def test_external_data_fp16_and_dynamic_sequence_length(tmp_path):
    import torch
    module, x = _hf_model("bert")
    torch.onnx.export(module, (x,), tmp_path / "m.onnx", input_names=["x"], opset_version=17, dynamo=False,
                      dynamic_axes={"x": {0: "batch", 1: "sequence"}})
    with pytest.raises(InputShapeError, match="--input-shape x=1xN"):
        build_graph(tmp_path / "m.onnx")
    ref = build_graph(tmp_path / "m.onnx", {"x": (1, 32)})
    model = onnx.load(tmp_path / "m.onnx")
    onnx.save_model(model, tmp_path / "ext.onnx", save_as_external_data=True, location="ext.bin", size_threshold=0)
    assert build_graph(tmp_path / "ext.onnx", {"x": (1, 32)}).macs == ref.macs
    torch.onnx.export(module.half(), (x,), tmp_path / "half.onnx", input_names=["x"], opset_version=17, dynamo=False)
    g = build_graph(tmp_path / "half.onnx")
    assert g.memory == pytest.approx(ref.memory / 2, rel=0.01)  # float16: half the bytes moved
    assert g.macs == ref.macs and g.params == ref.params
