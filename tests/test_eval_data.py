import numpy as np
import pytest

from narformer_tvm.errors import InputError
from narformer_tvm.measure.eval_data import load_eval_data, random_data


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    """A model with two inputs (image float32 1x3x8x8, mask int64 1x?) built in ONNX directly."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])
    m = helper.make_tensor_value_info("mask", TensorProto.INT64, [1, "seq"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    n = helper.make_tensor_value_info("n", TensorProto.INT64, None)
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["y"]), helper.make_node("Identity", ["mask"], ["n"])],
                              "g", [x, m], [y, n])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path_factory.mktemp("m") / "two.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def one_input(tmp_path_factory):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path_factory.mktemp("m") / "one.onnx"
    onnx.save(model, str(path))
    return path


def sample(seq=5):
    return {"image": np.zeros((1, 3, 8, 8), np.float32), "mask": np.ones((1, seq), np.int64)}


def test_a_folder_of_npz_and_npy_samples_loads_in_order(two_inputs, one_input, tmp_path):
    (tmp_path / "a").mkdir()
    np.savez(tmp_path / "a" / "s0.npz", **sample(5))
    np.savez(tmp_path / "a" / "s1.npz", **sample(7))  # dynamic dimension: any length
    data = load_eval_data(str(tmp_path / "a"), two_inputs)
    assert len(data.feeds) == 2 and data.feeds[1]["mask"].shape == (1, 7) and not data.random
    assert str(tmp_path / "a") in data.describe()
    (tmp_path / "b").mkdir()
    for i in range(3):
        np.save(tmp_path / "b" / f"{i}.npy", np.full((2, 4), i, np.float32))
    data = load_eval_data(str(tmp_path / "b"), one_input)
    assert [float(f["x"][0, 0]) for f in data.feeds] == [0.0, 1.0, 2.0]
    assert random_data(one_input, batch_size=3).feeds[0]["x"].shape == (3, 4)


def test_bad_samples_name_the_file_and_say_what_is_wrong(two_inputs, one_input, tmp_path):
    def err(folder_setup, model):
        d = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        d.mkdir()
        folder_setup(d)
        with pytest.raises(InputError) as e:
            load_eval_data(str(d), model)
        return str(e.value)

    msg = err(lambda d: np.savez(d / "s.npz", image=np.zeros((1, 3, 8, 8), np.float64), mask=np.ones((1, 5), np.int64)),
              two_inputs)
    assert "s.npz" in msg and "'image' is float64, the model takes float32" in msg and "astype(np.float32)" in msg
    msg = err(lambda d: np.savez(d / "s.npz", image=np.zeros((1, 3, 16, 16), np.float32), mask=np.ones((1, 5), np.int64)),
              two_inputs)
    assert "s.npz" in msg and "shape 1x3x16x16, the model takes 1x3x8x8" in msg
    msg = err(lambda d: np.savez(d / "s.npz", image=np.zeros((1, 3, 8, 8), np.float32)), two_inputs)
    assert "no array for input(s) mask" in msg
    msg = err(lambda d: np.save(d / "s.npy", np.zeros((1, 3, 8, 8), np.float32)), two_inputs)
    assert "s.npy" in msg and "2 inputs (image, mask)" in msg and ".npz" in msg
    msg = err(lambda d: (d / "s.npy").write_text("not numpy"), one_input)
    assert "s.npy: not a readable numpy file" in msg
    assert "no .npy or .npz files" in err(lambda d: None, one_input)
    with pytest.raises(InputError, match="neither a folder nor module:function"):
        load_eval_data(str(tmp_path / "missing"), one_input)


def test_a_python_callable_supplies_samples(one_input, tmp_path):
    src = tmp_path / "mydata.py"
    src.write_text("import numpy as np\n"
                   "def samples():\n    return [np.ones((1, 4), np.float32) * i for i in range(4)]\n"
                   "def wrong():\n    return [np.ones((1, 5), np.float32)]\n"
                   "def broken():\n    raise RuntimeError('no disk')\n")
    data = load_eval_data(f"{src}:samples", one_input)
    assert len(data.feeds) == 4 and data.source == f"{src}:samples"
    with pytest.raises(InputError, match=r"wrong sample 0: input 'x' has shape 1x5, the model takes \?x4"):
        load_eval_data(f"{src}:wrong", one_input)
    with pytest.raises(InputError, match="calling it failed.*no disk"):
        load_eval_data(f"{src}:broken", one_input)
    with pytest.raises(InputError, match="has no callable 'nothing'"):
        load_eval_data(f"{src}:nothing", one_input)
    with pytest.raises(InputError, match="cannot import no_such_module"):
        load_eval_data("no_such_module:f", one_input)
