"""The CUDA paths: TVM's CUDA build wherever nvcc is installed, and end-to-end profiling on a GPU
(marked ``gpu``, skipped without one; examples/cuda_check.sh runs them on a lent GPU machine)."""
import json
import shutil

import onnx
import pytest
from conftest import conv_model

from narformer_tvm.cli.main import main
from narformer_tvm.data.store import Store
from narformer_tvm.measure.backends import MeasureConfig


def _cuda_device() -> bool:
    tvm = pytest.importorskip("tvm")
    return bool(tvm.cuda(0).exist)


@pytest.fixture
def small_models(tmp_path):
    paths = []
    for i, dims in enumerate([(1, 3, 32, 32), (1, 3, 64, 64)]):
        p = tmp_path / f"g{i}.onnx"
        onnx.save(conv_model(dims=dims), p)
        paths.append(p)
    return paths


@pytest.mark.slow
def test_tvm_builds_a_model_for_cuda_without_a_gpu(small_models):
    """The GPU schedules (dlight) and nvcc's part of the build need no device, so this runs in CI."""
    pytest.importorskip("tvm")
    if not shutil.which("nvcc"):
        pytest.skip("nvcc is not installed")
    from narformer_plugins.tvm_runtime import compile_onnx

    ex, model = compile_onnx(str(small_models[0]), MeasureConfig(target="cuda"))

    def modules(mod):
        yield mod
        for imported in mod.imports_:
            yield from modules(imported)

    cuda = [m for m in modules(ex.mod) if m.kind == "cuda"]
    assert cuda and "__global__" in cuda[0].inspect_source(), "no CUDA kernel in the build"
    assert model.graph.node[0].op_type == "Conv"


@pytest.mark.gpu
def test_profile_cuda_tvm_end_to_end(capsys, tmp_path, small_models):
    if not _cuda_device():
        pytest.skip("no CUDA device")
    db = tmp_path / "cuda.db"
    with pytest.raises(SystemExit) as exc:
        main(["profile", *map(str, small_models), "--target", "cuda", "--runtime", "tvm", "--db", str(db),
              "--repeat-pass", "0.5"])
    assert exc.value.code == 0, capsys.readouterr().err
    rows = Store(db).rows()
    assert len(rows) == 2 and all(r["latency_ms"] > 0 for r in rows)
    config = json.loads(Store(db).db.execute("SELECT fingerprint FROM configs").fetchone()[0])
    assert config["gpu"], "the fingerprint names no GPU"
    assert all(r["info"]["device"].startswith("cuda") for r in rows)


@pytest.mark.gpu
def test_profile_cuda_onnxruntime_end_to_end(capsys, tmp_path, small_models):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (pip install 'narformer-tvm[cuda]')")
    db = tmp_path / "ort-cuda.db"
    with pytest.raises(SystemExit) as exc:
        main(["profile", *map(str, small_models), "--target", "cuda", "--runtime", "onnxruntime", "--db", str(db)])
    assert exc.value.code == 0, capsys.readouterr().err
    assert all(r["latency_ms"] > 0 for r in Store(db).rows())
