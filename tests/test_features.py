import numpy as np
import pytest

from narformer_tvm.graph.onnx_graph import OpGraph, OpNode
from narformer_tvm.graph.tokens import (
    SCALARS,
    VOCAB,
    FeatureConfig,
    encode,
    sinusoid,
    unknown_ops,
)


def graph_of(*ops: str) -> OpGraph:
    nodes = [OpNode(name=f"n{i}", op_type=op, input_shapes=[(1, 8, 4, 4)], output_shapes=[(1, 8, 4, 4)],
                    flops=100 * (i + 1)) for i, op in enumerate(ops)]
    return OpGraph("g", nodes, [(i, i + 1) for i in range(len(ops) - 1)])


def test_every_known_op_has_its_own_slot():
    cfg = FeatureConfig()
    enc = encode(graph_of(*VOCAB), cfg)
    onehot = enc.x[:, :cfg.op_width]
    assert onehot.shape == (len(VOCAB), len(VOCAB) + 1)
    np.testing.assert_array_equal(onehot.argmax(1), np.arange(len(VOCAB)))  # MatMul is not zeroed
    assert onehot.sum(1).tolist() == [1.0] * len(VOCAB)
    assert onehot[VOCAB.index("MatMul"), VOCAB.index("MatMul")] == 1.0


def test_unknown_ops_are_counted_and_share_the_unknown_slot():
    g = graph_of("Conv", "MyCustomOp", "MyCustomOp", "Relu")
    assert unknown_ops(g) == {"MyCustomOp": 2}
    cfg = FeatureConfig()
    x = encode(g, cfg).x
    assert x[1, len(VOCAB)] == 1.0 and x[2, len(VOCAB)] == 1.0 and x[0, len(VOCAB)] == 0.0


@pytest.mark.parametrize("op_enc, attr_enc", [("onehot", "sinusoidal"), ("sinusoidal", "sinusoidal"),
                                              ("onehot", "raw"), ("sinusoidal", "raw")])
def test_widths_match_the_config(op_enc, attr_enc):
    cfg = FeatureConfig(op_encoding=op_enc, attr_encoding=attr_enc, n_freqs=4)
    enc = encode(graph_of("Conv", "Relu", "Add"), cfg)
    assert enc.x.shape == (3, cfg.n_features)
    assert enc.edges.tolist() == [[0, 1], [1, 2]]
    assert enc.static.shape == (cfg.n_static,)
    assert np.isfinite(enc.x).all()
    per = 8 if attr_enc == "sinusoidal" else 1
    assert cfg.n_features == cfg.op_width + per * len(SCALARS)


def test_sinusoid_by_hand():
    enc = sinusoid(np.array([[2.0]]), n_freqs=2, max_period=100.0)  # frequencies 1 and 1/10
    np.testing.assert_allclose(enc, [[np.sin(2.0), np.sin(0.2), np.cos(2.0), np.cos(0.2)]])


def test_sinusoid_separates_nearby_channel_counts():
    a, b = sinusoid(np.array([[64.0]]), 8, 1e4), sinusoid(np.array([[65.0]]), 8, 1e4)
    assert np.abs(a - b).max() > 0.1


def test_config_round_trip_and_validation():
    cfg = FeatureConfig(n_freqs=6, op_encoding="sinusoidal")
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="op_encoding"):
        FeatureConfig(op_encoding="bogus")


def test_graph_table_round_trips_through_bytes(exported):
    from narformer_tvm.graph.onnx_graph import build_graph
    from narformer_tvm.graph.tokens import GraphTable, encode_table, table

    g = build_graph(exported("mobilenet_v3_small"))
    t = table(g)
    back = GraphTable.from_bytes(t.to_bytes(), name=g.name)
    assert back.ops == t.ops and np.array_equal(back.scalars, t.scalars) and np.array_equal(back.edges, t.edges)
    np.testing.assert_array_equal(back.static, t.static)
    np.testing.assert_array_equal(encode_table(back).x, encode(g).x)
    assert len(t.to_bytes()) < 40 * len(g.nodes)  # compact: a 20k-model dataset stays small


def test_node_kinds_and_kind_counts():
    from narformer_tvm.graph.tokens import (
        KINDS,
        SCALARS,
        GraphTable,
        kind_counts,
        node_costs,
        node_kinds,
    )

    scalars = np.zeros((4, len(SCALARS)), dtype=np.int64)
    scalars[:, SCALARS.index("group")] = [1, 32, 1, 0]
    scalars[:, SCALARS.index("log_flops")] = [480, 320, 160, 0]  # 2^(v/16) - 1 FLOPs
    scalars[:, SCALARS.index("log_memory")] = [320, 320, 320, 320]
    t = GraphTable(["Conv", "Conv", "Gemm", "Relu"], scalars, np.zeros((0, 2), dtype=np.int64),
                   np.zeros(6, dtype=np.float32))
    assert node_kinds(t).tolist() == [KINDS.index("dense_conv"), KINDS.index("grouped_conv"),
                                      KINDS.index("other"), KINDS.index("other")]
    cost = node_costs(t).astype(np.float64)
    expected = [*cost[0], *cost[1], *(cost[2] + cost[3]), 4.0, 1.0]
    np.testing.assert_allclose(kind_counts(t), expected)
    assert kind_counts(t)[0] == pytest.approx((2.0 ** 30 - 1) / 1e9, rel=1e-6)
