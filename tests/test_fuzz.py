"""Mutated and truncated ONNX files only ever end in the documented errors."""
import os
import tempfile
from pathlib import Path

import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from narformer_tvm.errors import ModelLoadError
from narformer_tvm.graph.onnx_graph import OpGraph, build_graph
from narformer_tvm.measure import families

_SEED: list[bytes] = []


def seed_model_bytes() -> bytes:
    """A small exported ResNet (kept out of hypothesis' arguments so failures print short)."""
    if not _SEED:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "seed.onnx"
            model = families.build("resnet", depths=(1, 1), widths=(4, 8), stem=4, classes=3)
            families.export_onnx(model, path, 16, dynamic_batch=True, opset=13)
            _SEED.append(path.read_bytes())
    return _SEED[0]


EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 150))

mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(b"")),
    st.tuples(st.just("flip"), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
)


def mutate(data: bytes, ops) -> bytes:
    for kind, where, payload in ops:
        i = int(where * len(data))
        if kind == "truncate":
            data = data[:i]
        elif kind == "flip":
            data = data[:i] + payload + data[i + len(payload):]
        else:
            data = data[:i] + payload + data[i:]
    return data


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_files_load_or_fail_cleanly(ops, tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "mutant.onnx"
    path.write_bytes(mutate(seed_model_bytes(), ops))
    try:
        g = build_graph(path)
    except ModelLoadError as e:
        assert str(path) in e.message or "mutant" in e.message
    else:
        assert isinstance(g, OpGraph) and len(g.nodes) > 0


def test_seed_itself_loads(tmp_path):
    (tmp_path / "s.onnx").write_bytes(seed_model_bytes())
    assert len(build_graph(tmp_path / "s.onnx").nodes) > 5


structural = st.lists(st.tuples(st.sampled_from(["dim", "drop_init", "rename_input", "op_type", "drop_attr",
                                                 "drop_node", "attr_value"]),
                                st.integers(0, 10_000), st.integers(-3, 1 << 20)), min_size=1, max_size=4)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=structural)
def test_structurally_broken_models_load_or_fail_cleanly(edits):
    m = onnx.load_model_from_string(seed_model_bytes())
    g = m.graph
    for kind, k, value in edits:
        if kind == "dim":
            dims = g.input[0].type.tensor_type.shape.dim
            dims[k % len(dims)].Clear()
            dims[k % len(dims)].dim_value = value
        elif kind == "drop_init" and len(g.initializer):
            del g.initializer[k % len(g.initializer)]
        elif kind == "rename_input" and len(g.node):
            node = g.node[k % len(g.node)]
            if node.input:
                node.input[value % len(node.input)] = f"missing_{value}"
        elif kind == "op_type" and len(g.node):
            g.node[k % len(g.node)].op_type = ["Conv", "MatMul", "Reshape", "Bogus", "Concat", "Gemm"][value % 6]
        elif kind == "drop_attr" and len(g.node):
            node = g.node[k % len(g.node)]
            if node.attribute:
                del node.attribute[value % len(node.attribute)]
        elif kind == "drop_node" and len(g.node):
            del g.node[k % len(g.node)]
        elif kind == "attr_value" and len(g.node):
            for a in g.node[k % len(g.node)].attribute:
                if a.type == onnx.AttributeProto.INTS and len(a.ints):
                    a.ints[0] = value
                elif a.type == onnx.AttributeProto.INT:
                    a.i = value
    try:
        graph = build_graph(m)
    except ModelLoadError:
        pass
    else:
        assert isinstance(graph, OpGraph)
