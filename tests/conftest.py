import warnings
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

warnings.filterwarnings("ignore")


@pytest.fixture(autouse=True)
def own_user_dir(tmp_path_factory, monkeypatch):
    """The tests never see (or write) the developer's own calibrated profiles."""
    monkeypatch.setenv("NARFORMER_USER_DIR", str(tmp_path_factory.mktemp("user")))


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory) -> Path:
    """A folder shared by the whole session, so each network is exported once."""
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def exported(onnx_cache):
    """exported(name, **export_kw) -> path of a published network (see families.STANDARD)."""
    from narformer_tvm.measure import families

    def get(name: str, **kw) -> Path:
        tag = "_".join(f"{k}-{v}" for k, v in sorted(kw.items()))
        path = onnx_cache / f"{name}{'_' + tag if tag else ''}.onnx"
        if not path.exists():
            model, res = families.build_standard(name)
            families.export_onnx(model, path, kw.pop("resolution", res), **{"export_params": False, **kw})
        return path

    return get


def conv_model(opset: int = 17, dims=(1, 3, 8, 8)) -> onnx.ModelProto:
    """x(1,3,8,8) -> Conv(4 filters 3x3, pad 1, bias) -> Relu -> y(1,4,8,8), built by hand."""
    w = helper.make_tensor("w", TensorProto.FLOAT, (4, 3, 3, 3), [0.1] * 108)
    b = helper.make_tensor("b", TensorProto.FLOAT, (4,), [0.0] * 4)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, b])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


@pytest.fixture
def conv_onnx(tmp_path) -> Path:
    path = tmp_path / "conv.onnx"
    onnx.save(conv_model(), path)
    return path
