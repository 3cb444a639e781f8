import numpy as np
import pytest
import torch

from narformer_tvm.graph.onnx_graph import OpGraph, OpNode
from narformer_tvm.graph.tokens import FeatureConfig, encode
from narformer_tvm.learn.train import FitConfig, fit
from narformer_tvm.model.batching import collate
from narformer_tvm.model.narformer import Dropout, GroupLinear, ModelConfig, NARFormer

CFG = FeatureConfig(n_freqs=4)


def random_graph(rng: np.random.Generator, n: int) -> OpGraph:
    ops = ["Conv", "Relu", "Add", "MatMul", "Gemm", "MaxPool", "Concat"]
    nodes = []
    for i in range(n):
        c, h = int(rng.choice([8, 16, 32, 64])), int(rng.choice([7, 14, 28]))
        nodes.append(OpNode(name=f"n{i}", op_type=str(rng.choice(ops)), input_shapes=[(1, c, h, h)],
                            output_shapes=[(1, c, h, h)], attrs={"kernel": (3, 3), "stride": (1, 1)},
                            macs=int(c * c * h * h * 9), flops=int(2 * c * c * h * h * 9), params=c * c * 9,
                            memory=4 * c * h * h * 2))
    edges = [(i, i + 1) for i in range(n - 1)] + [(i, i + 2) for i in range(0, n - 2, 3)]
    return OpGraph(f"g{n}", nodes, edges)


def small_model(**kw) -> NARFormer:
    torch.manual_seed(0)
    return NARFormer(ModelConfig(n_features=CFG.n_features, d_model=32, n_groups=4, dropout=0.0, **kw)).eval()


ABLATIONS = [{}, {"graph_attention": False}, {"gffn": False}, {"type_enhance": False},
             {"backbone": "gnn"}, {"layerwise_readout": True, "n_layers": 3},
             {"layerwise_readout": True, "layer_fusion": True, "n_layers": 3},
             {"block": "l2"}, {"block": "l2", "layerwise_readout": True, "layer_fusion": True, "n_layers": 3},
             {"block": "l2", "gffn_norm": True}, {"block": "l2", "enhance_first": True},
             {"block": "l2", "layerwise_readout": True, "n_layers": 2, "readout_norm": False},
             {"block": "l2", "head": "reference"}]


@pytest.mark.parametrize("kw", ABLATIONS)
def test_padded_batch_equals_per_graph_forward(kw):
    rng = np.random.default_rng(0)
    graphs = [encode(random_graph(rng, n), CFG) for n in (3, 11, 7)]
    model = small_model(**kw)
    with torch.no_grad():
        batched = model(*collate(graphs).inputs())
        single = torch.cat([model(*collate([g]).inputs()) for g in graphs])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)
    assert (batched > 0).all()


def test_layer_fusion_gates_the_layerwise_readouts():
    rng = np.random.default_rng(4)
    batch = collate([encode(random_graph(rng, n), CFG) for n in (4, 8)])
    plain = small_model(layerwise_readout=True, n_layers=3)
    with torch.no_grad():
        plain.head[-1].weight.normal_()  # initialised at zero: the output would not depend on the readout
    fused = small_model(layerwise_readout=True, layer_fusion=True, n_layers=3)
    fused.load_state_dict(plain.state_dict(), strict=False)
    gate = fused.fusion[-2]  # the Linear before the sigmoid
    with torch.no_grad():
        gate.weight.zero_()
        gate.bias.fill_(50.0)  # every gate open: the plain sum of the readouts
        torch.testing.assert_close(fused(*batch.inputs()), plain(*batch.inputs()))
        gate.bias[1:] = -50.0  # only the first block's readout passes
        assert not torch.allclose(fused(*batch.inputs()), plain(*batch.inputs()))
    with pytest.raises(ValueError, match="layerwise_readout"):
        small_model(layer_fusion=True)


def test_l2_block_keeps_node_embeddings_on_the_unit_sphere():
    rng = np.random.default_rng(5)
    batch = collate([encode(random_graph(rng, n), CFG) for n in (5, 9)])
    x, adj, degree, mask = batch.inputs()[:4]
    h = torch.randn(*mask.shape, 32) * 1000  # (B, N, d): far off the unit sphere
    with torch.no_grad():
        outs = {form: small_model(block=form, type_enhance=False).blocks[0](h, adj, degree, mask)
                for form in ("prenorm", "l2")}
    norms = outs["l2"].norm(dim=-1)[mask]  # the FFN residual (scale 0.1) may move them off it by a little
    assert (norms < 1.5).all() and (norms > 0.1).all(), norms
    assert outs["prenorm"].norm(dim=-1)[mask].min() > 100  # the residual keeps the input's scale
    assert "blocks.0.norm1.weight" not in small_model(block="l2").state_dict()  # no attention residual
    with pytest.raises(ValueError, match="prenorm or l2"):
        small_model(block="post")


def test_deterministic_given_seed():
    rng = np.random.default_rng(1)
    batch = collate([encode(random_graph(rng, 9), CFG)])
    with torch.no_grad():
        assert torch.equal(small_model()(*batch.inputs()), small_model()(*batch.inputs()))


def test_dropout_rate_expected_value_gradient_and_seed():
    x = torch.ones(200_000, requires_grad=True)
    torch.manual_seed(3)
    d = Dropout(0.25).train()
    y = d(x)
    assert abs((y == 0).float().mean().item() - 0.25) < 0.005 and abs(y.mean().item() - 1) < 0.01
    torch.testing.assert_close(torch.unique(y.detach()), torch.tensor([0.0, 1 / 0.75]))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask)/dx = mask
    torch.manual_seed(3)
    assert torch.equal(Dropout(0.25).train()(x), y)  # torch.manual_seed fixes the masks
    assert not torch.equal(d(x), y)  # a fresh mask each call
    assert d.eval()(x) is x and Dropout(0.0).train()(x) is x
    assert d.train()(x.detach().bfloat16()).dtype == torch.bfloat16


def test_bf16_autocast_keeps_the_head_in_float32():
    rng = np.random.default_rng(2)
    batch = collate([encode(random_graph(rng, n), CFG) for n in (5, 9)])
    model = small_model(layerwise_readout=True, n_layers=3)
    with torch.no_grad():
        full = model(*batch.inputs())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(*batch.inputs())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=0.05, atol=0)


def test_graph_attention_only_sees_neighbours():
    """Changing a node's features must not move a node two hops away after one block."""
    torch.manual_seed(0)
    model = NARFormer(ModelConfig(n_features=CFG.n_features, d_model=32, n_groups=4, n_layers=1,
                                  dropout=0.0)).eval()
    rng = np.random.default_rng(2)
    g = encode(random_graph(rng, 6), CFG)
    g.edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]])
    b1 = collate([g])
    x2 = b1.x.clone()
    x2[0, 0] += 1.0
    block = model.blocks[0]
    with torch.no_grad():
        h1 = block(model.embed(b1.x), b1.adj, b1.degree, b1.mask)
        h2 = block(model.embed(x2), b1.adj, b1.degree, b1.mask)
    diff = (h1 - h2).abs().sum(-1)[0]
    assert diff[0] > 0 and diff[1] > 0
    assert torch.all(diff[2:] == 0)


def test_graph_attention_over_edges_equals_the_dense_product(monkeypatch):
    """Large graphs take the edge-list path: the same outputs and gradients as the dense N x N one (in
    float64: exactly, up to summation order), padding included; an ONNX export traces the dense one."""
    import narformer_tvm.model.narformer as nf

    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    graphs = [encode(random_graph(rng, n), CFG) for n in (90, 40, 70)]  # padded to 90
    batch = collate(graphs)
    model = NARFormer(ModelConfig(n_features=CFG.n_features, d_model=16, n_groups=4, dropout=0.0)).double().eval()
    attention = model.blocks[0].attn
    h0 = torch.randn(3, 90, 16, dtype=torch.float64)
    weights = torch.randn(3, 90, 16, dtype=torch.float64)
    results = []
    for threshold in (10 ** 9, 8):
        monkeypatch.setattr(nf, "SPARSE_FROM", threshold)
        h = h0.clone().requires_grad_(True)
        attention.zero_grad()
        out = attention(h, batch.adj.double(), batch.mask)
        (out * weights).sum().backward()
        results.append((out.detach(), h.grad, attention.query.weight.grad.clone()))
    for dense, sparse in zip(*results):
        torch.testing.assert_close(sparse, dense, rtol=1e-12, atol=1e-12)
    model.float()
    with torch.no_grad():
        sparse = model(*batch.inputs())
        monkeypatch.setattr(nf, "SPARSE_FROM", 10 ** 9)
        torch.testing.assert_close(sparse, model(*batch.inputs()), rtol=1e-5, atol=0)


def test_group_linear_has_fewer_weights_and_matches_blockdiag():
    gl = GroupLinear(16, 32, 4)
    assert sum(p.numel() for p in gl.parameters()) == 4 * 4 * 8 + 32
    x = torch.randn(3, 5, 16)
    dense = torch.block_diag(*gl.weight)  # (16, 32)
    torch.testing.assert_close(gl(x), x @ dense + gl.bias)


def test_group_linear_norm_normalises_each_group_and_needs_the_gffn():
    gl = GroupLinear(16, 32, 4, norm=True)
    with torch.no_grad():
        gl.norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
        gl.norm.bias.fill_(0.25)
    x = torch.randn(3, 5, 16)
    plain = (x @ torch.block_diag(*gl.weight) + gl.bias).view(3, 5, 4, 8)  # each group's 8 outputs
    mean, var = plain.mean(-1, keepdim=True), plain.var(-1, unbiased=False, keepdim=True)
    expected = (plain - mean) / torch.sqrt(var + 1e-5) * gl.norm.weight + 0.25
    torch.testing.assert_close(gl(x), expected.view(3, 5, 32))
    with pytest.raises(ValueError, match="needs gffn"):
        small_model(gffn=False, gffn_norm=True)


def test_enhance_first_gates_the_block_input():
    rng = np.random.default_rng(5)
    x, adj, degree, mask = collate([encode(random_graph(rng, 6), CFG)]).inputs()[:4]
    first, plain = small_model(block="l2", enhance_first=True), small_model(block="l2", type_enhance=False)
    plain.load_state_dict(first.state_dict(), strict=False)  # the same block without its degree gate
    h = torch.randn(1, 6, 32)
    with torch.no_grad():
        gated = first.blocks[0].enhance(h, degree)
        torch.testing.assert_close(first.blocks[0](h, adj, degree, mask), plain.blocks[0](gated, adj, degree, mask))
        assert not torch.allclose(gated, h)
    with pytest.raises(ValueError, match="needs type_enhance"):
        small_model(type_enhance=False, enhance_first=True)


def test_short_training_run_overfits_a_small_set():
    rng = np.random.default_rng(3)
    graphs = [encode(random_graph(rng, int(n)), CFG) for n in rng.integers(4, 20, size=12)]
    targets = rng.uniform(0.5, 3.0, size=len(graphs))
    torch.manual_seed(0)
    model = NARFormer(ModelConfig(n_features=CFG.n_features, d_model=64, n_groups=4, dropout=0.0))
    history = fit(model, graphs, targets, FitConfig(epochs=400, lr=1e-2, batch_size=4, seed=0))
    assert history[-1] < history[0] / 10, history[::15]


@pytest.mark.parametrize("gffn_norm", [False, True])
def test_gffn_group_major_path_equals_chained_group_linears(gffn_norm):
    """The GFFN chains its group linear layers in group-major layout (no copy of the wide hidden
    activations); it computes what fc2(drop(act(fc1(h)))) does, dropout masks included."""
    from narformer_tvm.model.narformer import FeedForward

    ffn = FeedForward(ModelConfig(n_features=4, d_model=32, n_groups=4, dropout=0.5, gffn_norm=gffn_norm))
    h = torch.randn(3, 7, 32)
    for train in (False, True):
        ffn.train(train)
        outs = []
        for path in ("group-major", "chained"):
            torch.manual_seed(0)
            ffn.drop.rng = None  # the mask generator is seeded from torch on first use
            outs.append(ffn(h) if path == "group-major" else ffn.fc2(ffn.drop(ffn.act(ffn.fc1(h)))))
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-6, atol=1e-6)
        assert train == bool((outs[0] != ffn.eval()(h)).any())  # dropout on in training only
