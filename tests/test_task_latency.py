"""The task-latency model behind `tune --scheduler share`: fitting, files, design-space features, and a
whole-network tune that leaves the small task to its default schedule."""
import json

import numpy as np
import onnx
import pytest

from narformer_tvm.errors import CheckpointError, InputError
from narformer_tvm.integrations.tvm_task_latency import TaskLatencyModel, cross_validate, heavy_tasks


def synthetic(n=200, f=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, f)) * 10
    return x, 0.4 * x[:, 0] - 0.2 * x[:, 3] - 9 + rng.normal(0, 0.05, n)  # log seconds


def test_ridge_fit_recovers_a_log_linear_latency_and_survives_a_file(tmp_path):
    x, y = synthetic()
    m = TaskLatencyModel.fit(x[:150], y[:150], ridge=0.1)
    assert np.allclose(np.log(m.predict(x[150:])), y[150:], atol=0.3)
    m.save(tmp_path / "m.json")
    assert np.array_equal(TaskLatencyModel.load(tmp_path / "m.json").predict(x), m.predict(x))
    cv = cross_validate(x, y, ridge=0.1)
    assert cv["tasks"] == 200 and cv["spearman"] > 0.95 and cv["within_2x"] > 0.95
    shuffled = cross_validate(x, np.random.default_rng(1).permutation(y), ridge=0.1)
    assert shuffled["spearman"] < 0.3  # held-out folds: no credit for memorising
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else"}))
    for bad in ("other.json", "missing.json"):
        with pytest.raises(CheckpointError, match="task-latency model"):
            TaskLatencyModel.load(tmp_path / bad)


def test_heavy_tasks_keep_the_largest_shares_until_the_rest_is_small():
    assert heavy_tasks([0.5, 0.005, 0.3, 0.195], 0.01) == [0, 2, 3]
    assert heavy_tasks([0.5, 0.005, 0.3, 0.195], 0.2) == [0, 2]
    assert heavy_tasks([0.5, 0.005, 0.3, 0.195], 0.0) == [0, 1, 2, 3]
    assert heavy_tasks([0.6, 0.4], 0.5) == [0]  # never none
    assert heavy_tasks([1.0], 0.5) == [0]


tvm = pytest.importorskip("tvm")


def test_design_space_features_grow_with_the_work():
    from test_costmodel import matmul

    from narformer_tvm.integrations.tvm_env import meta_schedule
    from narformer_tvm.integrations.tvm_task_latency import design_space_features

    ms = meta_schedule()
    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    small, big = (design_space_features(ms, tvm.IRModule({"main": matmul(n)}), target) for n in (16, 64))
    assert small.shape == big.shape == (164,) and np.isfinite(big).all()
    assert big.sum() > small.sum()


@pytest.mark.slow
def test_share_scheduler_tunes_the_heavy_task_and_builds_the_other_with_its_default(tmp_path, capsys):
    from test_costmodel import conv_then_dense

    from narformer_tvm.cli.main import main
    from narformer_tvm.integrations.tvm_tuning import tune_onnx

    onnx.save(conv_then_dense(), tmp_path / "net.onnx")
    x, _ = synthetic(n=40, f=164)
    TaskLatencyModel.fit(x, x[:, 0] - 5).save(tmp_path / "lat.json")  # larger first feature: slower
    with pytest.raises(InputError, match="needs a task-latency model"):
        tune_onnx(tmp_path / "net.onnx", tmp_path / "w0", trials=4, cost_model="random", scheduler="share")
    report = tune_onnx(tmp_path / "net.onnx", tmp_path / "w", trials=4, cost_model="random", scheduler="share",
                       task_latency=tmp_path / "lat.json", drop_share=0.5, compare_onnxruntime=False, population=32)
    tuned = [t for t in report.tasks if not t.default_schedule]
    left = [t for t in report.tasks if t.default_schedule]
    assert len(tuned) == 1 and len(left) >= 1 and tuned[0].trials > 0 and all(t.trials == 0 for t in left)
    assert tuned[0].predicted_share >= max(t.predicted_share for t in left)
    assert abs(sum(t.predicted_share for t in report.tasks) - 1) < 1e-6
    assert report.tuned_ms > 0 and "task weighing" in report.phases  # the untuned task built and ran
    with pytest.raises(SystemExit) as exc:
        main(["tune", str(tmp_path / "net.onnx"), "--scheduler", "share", "--task-latency", str(tmp_path / "lat.json"),
              "--drop-share", "0.5", "--trials", "4", "--cost-model", "random", "--no-compare-onnxruntime",
              "--population", "32",
              "--work-dir", str(tmp_path / "c")])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "default schedule (small predicted share)" in out and "predicted share" in out


def test_task_latency_command_refuses_a_corpus_too_small_to_fit(tmp_path, capsys):
    from test_costmodel import matmul

    from narformer_tvm.cli.main import main
    from narformer_tvm.integrations.tvm_env import fast_builder, meta_schedule

    ms = meta_schedule()
    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    ms.tune_tir(matmul(16), target, str(tmp_path / "w"), max_trials_global=2, num_trials_per_iter=2,
                builder=fast_builder(), cost_model="random", seed=0)
    with pytest.raises(SystemExit) as exc:
        main(["tunedb", "task-latency", str(tmp_path / "w"), "--out", str(tmp_path / "lat.json")])
    assert exc.value.code != 0 and "1 tasks with a measured record: too few" in capsys.readouterr().err
    assert not (tmp_path / "lat.json").exists()
