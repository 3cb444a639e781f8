"""tunedb collect: measured schedules of many networks' tasks in one database, resumable, for pretrain."""
import shutil

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

pytest.importorskip("tvm")

from test_costmodel import conv_then_dense  # noqa: E402

from narformer_tvm.cli.main import main  # noqa: E402
from narformer_tvm.errors import InputError  # noqa: E402
from narformer_tvm.integrations.tvm_collect import NETWORKS, _append, finished, shared_tasks, summary  # noqa: E402


def _run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out + out.err


@pytest.mark.slow
def test_collect_measures_each_task_once_resumes_records_failures_and_feeds_pretraining(tmp_path, capsys):
    onnx.save(conv_then_dense(), tmp_path / "a.onnx")
    shutil.copy(tmp_path / "a.onnx", tmp_path / "b.onnx")  # the same tasks under another name
    (tmp_path / "broken.onnx").write_text("not a model")
    out = tmp_path / "corpus"
    args = ["tunedb", "collect", str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx"), str(tmp_path / "broken.onnx"),
            "--out", str(out), "--trials-per-task", "2", "--search", "random"]
    code, text = _run(capsys, *args)
    assert code == 0, text
    nets = finished(out)
    assert nets["a"]["tasks"] >= 2 and nets["a"]["tasks_collected"] == nets["a"]["tasks"] and nets["a"]["records"] > 0
    assert nets["b"]["tasks"] == nets["a"]["tasks"] and nets["b"]["tasks_collected"] == 0  # already in the database
    assert nets["broken"]["error"] and "broken: not collected" in text
    first = summary(out)
    assert first["networks"] == 3 and first["failed_networks"] == 1 and first["tasks"] >= 2
    assert first["records"] >= first["tasks"]

    shared, n = shared_tasks(tmp_path / "a.onnx", [out])  # an evaluation network must not be one of these
    assert n == nets["a"]["tasks"] and len(shared) == n
    other = conv_then_dense()  # the same layers on a 16x16 input: other convolution and dense shapes
    other.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 16
    other.graph.input[0].type.tensor_type.shape.dim[3].dim_value = 16
    other.graph.initializer[1].CopyFrom(onnx.numpy_helper.from_array(
        np.zeros((1024, 10), dtype=np.float32), "d"))
    onnx.save(other, tmp_path / "other.onnx")
    shared, n = shared_tasks(tmp_path / "other.onnx", [out])
    assert n >= 2 and len(shared) < n
    with pytest.raises(InputError, match="not a tunedb collection"):
        shared_tasks(tmp_path / "a.onnx", [tmp_path])

    code, text = _run(capsys, *args)  # resumed: nothing left to do
    assert code == 0 and "0 networks collected now" in text and summary(out)["records"] == first["records"]

    code, text = _run(capsys, "tunedb", "collect", str(tmp_path / "missing.onnx"), "--out", str(out))
    assert code != 0 and "no such model file" in text and "Traceback" not in text

    code, text = _run(capsys, "tunedb", "pretrain", str(out), "--out", str(tmp_path / "cm.pt"), "--steps", "3")
    assert code == 0 and (tmp_path / "cm.pt").exists(), text


def test_a_line_torn_by_a_crash_is_skipped_and_the_next_record_kept(tmp_path):
    _append(tmp_path / NETWORKS, {"name": "a", "tasks": 3})
    with open(tmp_path / NETWORKS, "a") as f:
        f.write('{"name": "b", "ta')  # the process died mid-write
    _append(tmp_path / NETWORKS, {"name": "c", "tasks": 1})
    assert sorted(finished(tmp_path)) == ["a", "c"]  # b is collected again
