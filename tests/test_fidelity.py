import numpy as np
import pytest

from narformer_tvm.errors import InputError
from narformer_tvm.measure import fidelity


def test_compare_measures_relative_error_cosine_and_top1_of_class_scores():
    rng = np.random.default_rng(0)
    ref = [[rng.standard_normal((4, 10)).astype(np.float32)] for _ in range(3)]
    same = fidelity.compare(ref, [[r[0] + 1e-7] for r in ref])
    assert same.passed and same.rel_error < 1e-5 and same.cosine > 0.99999 and same.top1 == 1.0
    noisy = fidelity.compare(ref, [[r[0] + 0.5 * rng.standard_normal(r[0].shape)] for r in ref])
    assert not noisy.passed and 0.2 < noisy.rel_error < 1.0 and noisy.top1 < 1.0
    assert fidelity.compare(ref, [[r[0] + 0.5 * rng.standard_normal(r[0].shape)] for r in ref], max_error=10).passed
    tied = [[np.array([[5.0, 5.001, 0.0, 1.0]], np.float32)]]  # a tiny error that flips the top class
    flipped = fidelity.compare(tied, [[np.array([[5.001, 5.0, 0.0, 1.0]], np.float32)]])
    assert flipped.rel_error < 0.01 and flipped.top1 == 0.0 and not flipped.passed
    features = [[rng.standard_normal((1, 16, 32))] for _ in range(2)]  # not class scores: no top-1
    assert fidelity.compare(features, features).top1 is None
    nan = fidelity.compare(ref, [[np.full_like(r[0], np.nan)] for r in ref], max_error=1e9)
    assert not nan.passed


def test_a_user_metric_decides_and_its_errors_are_clear(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    feeds = [{"x": np.ones((2, 3), np.float32)}]
    ref = fidelity.run(path, feeds)
    seen = {}

    def metric(inputs, reference, outputs):
        seen["n"] = (len(inputs), len(reference), len(outputs))
        return 0.5

    assert not fidelity.check(path, feeds, ref, user_check=metric, max_error=0.1).passed
    assert fidelity.check(path, feeds, ref, user_check=metric, max_error=0.6).user_value == 0.5
    assert seen["n"] == (1, 1, 1)
    assert not fidelity.check(path, feeds, ref, user_check=lambda *a: False).passed
    with pytest.raises(InputError, match="accuracy check raised ZeroDivisionError"):
        fidelity.check(path, feeds, ref, user_check=lambda *a: 1 / 0)
    broken = fidelity.check(tmp_path / "missing.onnx", feeds, ref)
    assert not broken.passed and broken.error and "failed to run" in broken.describe()
