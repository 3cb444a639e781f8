"""The pinned TVM stack works here: apache-tvm-ffi 0.1.15.x segfaults in save_json."""
import pytest

from conftest import conv_model

tvm = pytest.importorskip("tvm")


def test_relax_import_and_save_json_round_trip():
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(conv_model())
    text = tvm.ir.save_json(mod)
    tvm.ir.assert_structural_equal(tvm.ir.load_json(text), mod)
