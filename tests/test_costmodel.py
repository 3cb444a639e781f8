"""NAR-Former as a MetaSchedule cost model: the contract, a real tune, databases, import paths."""
import math
import shutil

import numpy as np
import onnx
import pytest

tvm = pytest.importorskip("tvm")
tvm_ffi = pytest.importorskip("tvm_ffi")

from narformer_tvm.errors import InputError  # noqa: E402
from narformer_tvm.integrations.tvm_env import (
    MS_MODULES,
    _import_first,
    fast_builder,
    host_target,
    meta_schedule,
)
from narformer_tvm.integrations.tvm_records import read_tuning_records


def matmul(n=32):
    from tvm import te

    a, b = te.placeholder((n, n), name="A"), te.placeholder((n, n), name="B")
    k = te.reduce_axis((0, n), name="k")
    c = te.compute((n, n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    return te.create_prim_func([a, b, c])


def test_both_import_paths():
    ms = meta_schedule()
    assert ms.__name__ in MS_MODULES
    assert _import_first(["narformer_no_such_module.meta_schedule", "tvm.s_tir.meta_schedule"]).__name__ == \
        "tvm.s_tir.meta_schedule"
    with pytest.raises(ImportError, match="MetaSchedule not found"):
        _import_first(["narformer_no_such_module.a", "narformer_no_such_module.b"])


def test_intrinsics_imported_with_a_quick_stack_that_reads_as_inspect_does():
    import inspect
    import sys

    from narformer_tvm.integrations.tvm_env import INTRINSICS, quick_stack

    def frames():
        return inspect.stack(), quick_stack()
    slow, quick = frames()
    fields = lambda f: (f.frame, f.filename, f.lineno, f.function, f.code_context, f.index)  # noqa: E731
    assert [fields(f) for f in slow[1:]] == [fields(f) for f in quick[1:]]  # [0]: the line that calls each
    assert quick[0].function == "frames" and "quick_stack()" in quick[0].code_context[0]
    meta_schedule()
    assert any(name in sys.modules for name in INTRINSICS) and inspect.stack is not quick_stack


def test_pretraining_stops_when_the_held_out_tau_stops_rising_and_keeps_the_best_weights():
    from narformer_tvm.integrations.tvm_cost_model import NARFormerCostModel

    rng = np.random.default_rng(0)
    tasks = []
    for t in range(12):  # a schedule runs faster the larger its first feature (three others are noise)
        feats = [np.pad(rng.standard_normal((3, 4)), ((0, 0), (0, 160))).astype(np.float32) for _ in range(16)]
        tasks.append((f"task{t}", feats, [float(np.exp(-f[0, 0])) for f in feats]))
    cm, lines = NARFormerCostModel(seed=0), []
    r = cm.fit_tasks(tasks, steps=400, validation_share=0.25, eval_every=20, patience=3, progress=lines.append)
    taus = [tau for _, tau in r["curve"]]
    best = taus.index(max(taus))
    assert r["validation_tasks"] == 3 and len(lines) == len(taus) and len(taus) - 1 - best <= 3
    assert r["validation_tau"] == max(taus) > 0.6 and r["steps"] == r["curve"][best][0]
    held = [t for t in tasks if t[0] in r["held_out"]]
    assert cm._held_out_tau(held) == pytest.approx(r["validation_tau"])  # the best scoring's weights


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A real tune of a tiny matmul with the cost model plugged in (few trials)."""
    from narformer_tvm.integrations.tvm_cost_model import NARFormerCostModel

    ms = meta_schedule()
    work = tmp_path_factory.mktemp("tune")
    cm = NARFormerCostModel(num_warmup_samples=4, update_steps=5)
    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    db = ms.tune_tir(matmul(), target, str(work), max_trials_global=8, num_trials_per_iter=4, builder=fast_builder(),
                     cost_model=cm, seed=0)
    return cm, db, work, target


@pytest.mark.slow
def test_cost_model_contract(tuned, tmp_path):
    from narformer_tvm.integrations.tvm_cost_model import NARFormerCostModel

    cm, db, work, target = tuned
    ms = meta_schedule()
    records = db.get_all_tuning_records()
    assert len(records) == 8 and cm.data_size == 8 and cm.trained
    # one finite score per candidate
    ctx = ms.TuneContext(mod=records[0].workload.mod, target=target)
    cands = []
    for rec in records[:5]:
        sch = tvm.s_tir.Schedule(rec.workload.mod)
        rec.trace.apply_to_schedule(sch, remove_postproc=False)
        cands.append(ms.MeasureCandidate(sch, rec.args_info))
    scores = cm.predict(ctx, cands)
    assert scores.shape == (5,) and np.isfinite(scores).all()
    # features are extracted once per distinct schedule; repeats read the same numbers back
    fresh = [x.numpy().astype(np.float32) for x in ms.feature_extractor.PerStoreFeature().extract_from(ctx, cands)]
    distinct = len({tvm_ffi.structural_hash(c.sch.mod) for c in cands})
    real, calls = cm.extractor, []

    class Counting:
        def extract_from(self, context, candidates):
            calls.append(len(candidates))
            return real.extract_from(context, candidates)

    cm.extractor = Counting()
    cm.feature_cache.clear()
    first, again = cm._features(ctx, cands + cands[:2]), cm._features(ctx, cands)
    assert distinct > 1 and calls == [distinct]
    assert all(np.array_equal(a, b) for a, b in zip(first + again, fresh + fresh[:2] + fresh))
    cm.feature_cache_size = 2
    cm._features(ctx, cands)
    assert len(cm.feature_cache) == 2 and calls == [distinct]
    cm.extractor = real
    # failed results are accepted and score 0 in training
    failed = [ms.runner.RunnerResult(run_secs=None, error_msg="boom") for _ in cands[:2]]
    cm.update(ctx, cands[:2], failed)
    xs, ys, _ = cm._training_set()
    assert len(ys) == 10 and (ys == 0).sum() == 2 and ys.max() == pytest.approx(1.0)
    # save and load give identical predictions; a frozen model does not train on update
    cm.save(str(tmp_path / "cm.pt"))
    loaded = NARFormerCostModel(pretrained=str(tmp_path / "cm.pt"), frozen=True)
    np.testing.assert_allclose(loaded.predict(ctx, cands), cm.predict(ctx, cands), rtol=1e-6)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    ok = [ms.runner.RunnerResult(run_secs=[tvm.runtime.convert(1e-5)], error_msg=None) for _ in cands[:2]]
    loaded.update(ctx, cands[:2], ok)
    assert all((before[k] == v).all() for k, v in loaded.model.state_dict().items())


@pytest.mark.slow
def test_database_reading_and_pretraining(tuned, tmp_path):
    from narformer_tvm.integrations.tvm_cost_model import NARFormerCostModel
    from narformer_tvm.integrations.tvm_records import FEATURE_CACHE

    work = tmp_path / "work"
    shutil.copytree(tuned[2], work)
    (task, feats, costs), = read_tuning_records(str(work))
    assert len(feats) == 8 and all(f.shape[1] == 164 for f in feats) and all(math.isfinite(c) for c in costs)
    assert (work / FEATURE_CACHE).is_file()  # the second read takes the features from the cache
    (task2, feats2, costs2), = read_tuning_records(str(work))
    assert task2 == task and costs2 == costs and all((a == b).all() for a, b in zip(feats, feats2))
    records = work / "database_tuning_record.json"
    records.write_text(records.read_text() + records.read_text().splitlines()[0] + "\n")  # the database grew
    (_, feats3, _), = read_tuning_records(str(work))
    assert len(feats3) == 9 and len(read_tuning_records(str(work))[0][1]) == 9
    cm = NARFormerCostModel()
    assert cm.pretrain([str(work)], steps=5)["records"] == 9 and cm.trained
    with pytest.raises(InputError, match="no MetaSchedule database"):
        read_tuning_records(str(work / "nope"))


@pytest.mark.slow
def test_tune_cli_reports_tuned_and_untuned(tmp_path, capsys):
    from conftest import conv_model

    from narformer_tvm.cli.main import main

    onnx.save(conv_model(dims=(1, 3, 16, 16)), tmp_path / "conv.onnx")
    with pytest.raises(SystemExit) as exc:
        main(["tune", str(tmp_path / "conv.onnx"), "--trials", "4", "--cost-model", "random", "--population", "32",
              "--work-dir", str(tmp_path / "w")])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "untuned" in out and "tuned" in out and "fused_conv2d" in out
    assert (tmp_path / "w" / "database_tuning_record.json").stat().st_size > 0
    with pytest.raises(SystemExit) as exc:
        main(["tunedb", "pretrain", str(tmp_path / "w"), "--out", str(tmp_path / "cm.pt"), "--steps", "3"])
    assert exc.value.code == 0 and (tmp_path / "cm.pt").exists()
    with pytest.raises(SystemExit) as exc:
        main(["tune", str(tmp_path / "conv.onnx"), "--trials", "8", "--predict-only", "--measure-top", "2",
              "--pretrained", str(tmp_path / "cm.pt"), "--work-dir", str(tmp_path / "p"), "--population", "64"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "built and measured" in out, out
    assert "search population 64" in " ".join(out.split())  # the table's title, however rich wraps it
    with pytest.raises(SystemExit) as exc:
        main(["tune", str(tmp_path / "conv.onnx"), "--predict-only", "--from-scratch",  # no shipped model either
              "--work-dir", str(tmp_path / "q")])
    assert exc.value.code == 2 and "--pretrained" in capsys.readouterr().err


def conv_then_dense() -> onnx.ModelProto:
    """x(1,3,8,8) -> Conv -> Relu -> Flatten -> Gemm(10): two different tunable tasks."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, (4, 3, 3, 3), rng.standard_normal(108).tolist())
    d = helper.make_tensor("d", TensorProto.FLOAT, (256, 10), rng.standard_normal(2560).tolist())
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "d"], ["y"])]
    g = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, d])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.slow
def test_whole_network_tuning_shares_trials_and_compares_with_onnxruntime(tmp_path, capfd):
    from tvm.relax.frontend.onnx import from_onnx

    from narformer_tvm.integrations.tvm_env import make_target
    from narformer_tvm.integrations.tvm_tuning import extract_tasks, measure_tuned, tune_onnx
    from narformer_tvm.measure.backends import MeasureConfig

    onnx.save(conv_then_dense(), tmp_path / "net.onnx")
    report = tune_onnx(tmp_path / "net.onnx", tmp_path / "w", trials=8, cost_model="random", population=32)
    # the module tune builds finds a tuned record for every task (TVM warns for each function it misses)
    target = make_target(MeasureConfig(runtime="tvm", target="llvm"))  # as tune's
    mod, tasks = extract_tasks(from_onnx(conv_then_dense(), keep_params_in_input=False), target, "net.onnx")
    db = meta_schedule().database.JSONDatabase(str(tmp_path / "w" / "database_workload.json"),
                                               str(tmp_path / "w" / "database_tuning_record.json"))
    capfd.readouterr()
    with target, tvm.transform.PassContext(opt_level=3):
        meta_schedule().relax_integration.compile_relax(db, mod, target, params=None, enable_warning=True)
    assert "record is not found" not in capfd.readouterr().err
    assert measure_tuned(tmp_path / "net.onnx", tmp_path / "w") > 0  # the same build, again from the folder
    assert report.scheduler == "gradient" and len(report.tasks) >= 2
    assert sum(t.trials for t in report.tasks) >= 2 and all(t.error is None for t in report.tasks)
    assert all(t.best_us for t in report.tasks if t.trials)  # each task tried has a measured best
    assert report.tuned_ms > 0 and report.untuned_ms > 0 and report.onnxruntime_ms > 0
    assert {"import", "untuned build and measure", "onnxruntime measure", "task extraction", "tuning",
            "tuned build", "tuned measure"} == set(report.phases)
    assert 0 < report.cost_model_seconds["predict"] < report.tuning_seconds  # a built-in model timed too
    # the tuning curve over wall time: never rising, within the tuning time
    times, lat = zip(*report.curve)
    assert list(lat) == sorted(lat, reverse=True) and 0 <= times[0] <= times[-1] <= report.tuning_seconds


def test_the_search_population_reaches_every_task_context_and_too_small_is_refused(tmp_path):
    from tvm.relax.frontend.onnx import from_onnx

    from narformer_tvm.integrations.tvm_env import make_target
    from narformer_tvm.integrations.tvm_tuning import extract_tasks, task_context, tune_onnx
    from narformer_tvm.measure.backends import MeasureConfig

    target = make_target(MeasureConfig(runtime="tvm", target="llvm"))
    _, tasks = extract_tasks(from_onnx(conv_then_dense(), keep_params_in_input=False), target, "net.onnx")
    ms = meta_schedule()
    small = task_context(ms, tasks[0], target, 0, population=32).search_strategy
    assert (small.population_size, small.init_min_unmeasured) == (32, 32)
    default = task_context(ms, tasks[0], target, 0).search_strategy
    assert default.population_size == 512  # MetaSchedule's own default search, untouched
    onnx.save(conv_then_dense(), tmp_path / "net.onnx")
    with pytest.raises(InputError, match="population of 8"):
        tune_onnx(tmp_path / "net.onnx", tmp_path / "w", trials=4, cost_model="random", population=8)


def test_network_curve_sums_weighted_task_bests_once_every_task_has_one(tmp_path):
    import json

    from narformer_tvm.integrations.tvm_tuning import network_curve, time_to_reach

    rows = [{"s": 1.0, "task": 0, "us": [10.0, None]}, {"s": 2.0, "task": 1, "us": [None]},
            {"s": 3.0, "task": 1, "us": [5.0, 7.0]}, {"s": 4.0, "task": 0, "us": [8.0]}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"s": 5, "ta')
    curve = network_curve(tmp_path / "c.jsonl", weights=[2, 3])
    assert curve == [(3.0, 2 * 10.0 + 3 * 5.0), (4.0, 2 * 8.0 + 3 * 5.0)]  # the torn last line is skipped
    assert time_to_reach(curve, 31.0) == 4.0 and time_to_reach(curve, 30.0) is None
    # a third task never measured (every run failed) keeps its default schedule: left out, not blocking
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + [{"s": 6.0, "task": 2, "us": [None]}]))
    assert network_curve(tmp_path / "d.jsonl", weights=[2, 3, 4]) == curve + [(6.0, 2 * 8.0 + 3 * 5.0)]


def test_tune_refuses_a_target_this_machine_lacks(tmp_path, capsys):
    from narformer_tvm.cli.main import main

    if tvm.cuda(0).exist:
        pytest.skip("this machine has a GPU")
    onnx.save(conv_then_dense(), tmp_path / "net.onnx")
    with pytest.raises(SystemExit) as exc:
        main(["tune", str(tmp_path / "net.onnx"), "--target", "cuda", "--cost-model", "random",
              "--work-dir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert exc.value.code != 0 and "no CUDA device" in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()  # refused before any work


@pytest.mark.slow
def test_predict_only_tuning_explores_by_prediction_and_measures_the_top(tuned, tmp_path):
    from narformer_tvm.integrations.tvm_cost_model import NARFormerCostModel
    from narformer_tvm.integrations.tvm_records import measure_top, predict_only
    from narformer_tvm.integrations.tvm_tuning import evolutionary_search

    cm, _, _, target = tuned
    ms = meta_schedule()
    with pytest.raises(InputError, match="trained cost model"):
        predict_only(NARFormerCostModel())
    builder, runner = predict_only(cm)
    assert cm.frozen
    # predicting is this test's cost: 32 schedules a generation, not MetaSchedule's 512
    explored = ms.tune_tir(matmul(), target, str(tmp_path / "w"), max_trials_global=16, num_trials_per_iter=8,
                           builder=builder, runner=runner, database="memory", cost_model=cm, seed=0,
                           strategy=evolutionary_search(ms, 32))
    predicted = explored.get_all_tuning_records()
    assert len(predicted) == 16 and all(r.run_secs for r in predicted)
    real = ms.database.MemoryDatabase()
    assert measure_top(explored, real, target, top_n=3) == 3
    measured = real.get_all_tuning_records()
    assert len(measured) == 3 and all(r.run_secs and float(r.run_secs[0]) > 0 for r in measured)
    # A dense layer's weight is layout-free: its schedules pre-pack the weight (RewriteLayout), and
    # the measured function must be called with the weight as the workload declares it.
    from tvm import te, topi

    a, w = te.placeholder((1, 512), name="a"), te.placeholder((256, 512), name="w")
    dense = te.create_prim_func([a, w, topi.nn.dense(a, w)])
    target = host_target(1)
    explored = ms.tune_tir(dense, target, str(tmp_path / "d"), max_trials_global=8, num_trials_per_iter=8,
                           builder=builder, runner=runner, database="memory", cost_model=cm, seed=0,
                           strategy=evolutionary_search(ms, 32))
    real = ms.database.MemoryDatabase()
    assert measure_top(explored, real, target, top_n=2) == 2
    assert all(r.run_secs and float(r.run_secs[0]) > 0 for r in real.get_all_tuning_records())


def test_cost_models_by_name():
    from narformer_tvm.integrations.cost_models import get_cost_model, list_cost_models

    assert {"narformer", "xgb", "random"} <= set(list_cost_models())
    assert type(get_cost_model("narformer")).__name__ == "NARFormerCostModel"
    assert get_cost_model("random") is not None
    with pytest.raises(InputError, match="choose from: .*narformer"):
        get_cost_model("nope")


def test_the_shipped_cost_model_ranks_held_out_records_better_than_random(tmp_path):
    """Records of benchmark tasks that are no workload of the corpus it was trained on (conv 3x3,
    depthwise, attention scores; 32 each, spread over each task's latency range)."""
    import gzip
    import json
    from pathlib import Path

    from narformer_tvm.integrations.tvm_cost_model import NARFormerCostModel
    from narformer_tvm.learn.ranking import within_task_kendall
    from narformer_tvm.profiles import list_profiles

    for name in ("database_workload.json", "database_tuning_record.json"):
        with gzip.open(Path(__file__).parent / "data" / "tvm-heldout" / f"{name}.gz", "rt") as f:
            (tmp_path / name).write_text(f.read())
    tasks = read_tuning_records(str(tmp_path), cache=False)
    assert [len(c) for _, _, c in tasks] == [32, 32, 32]
    groups = np.concatenate([[i] * len(c) for i, (_, _, c) in enumerate(tasks)])
    speed = np.concatenate([1 / np.array(c) for _, _, c in tasks])
    shipped = [folder / meta["tvm_cost_model"] for folder in list_profiles().values()
               for meta in [json.loads((folder / "profile.json").read_text())] if "tvm_cost_model" in meta]
    assert shipped, "no profile ships a TVM cost model"
    bound = 0.25  # random scores: tau ~ N(0, 0.07) averaged over 3 tasks of 32
    rng = np.random.default_rng(0)
    assert max(within_task_kendall(rng.random(len(speed)), speed, groups) for _ in range(20)) < bound
    for path in shipped:
        cm = NARFormerCostModel(pretrained=str(path))
        scores = cm.predict_features([f for _, fs, _ in tasks for f in fs])
        assert within_task_kendall(scores, speed, groups) > bound, path


def test_candidates_are_batched_as_their_chain_graphs_would_be():
    from narformer_tvm.graph.tokens import EncodedGraph, sinusoid
    from narformer_tvm.integrations.tvm_cost_model import N_POS_FREQS, NARFormerCostModel, _chain_batch
    from narformer_tvm.model.batching import collate

    def chain(feat):  # one node per store with a code of its position, an edge from each store to the next
        n = len(feat)
        pos = sinusoid(np.arange(n, dtype=np.float64)[:, None], N_POS_FREQS, 100.0).astype(np.float32)
        edges = np.array([(i, i + 1) for i in range(n - 1)], dtype=np.int64).reshape(-1, 2)
        return EncodedGraph(x=np.concatenate([feat, pos], axis=1), edges=edges, static=np.ones(1, np.float32))

    rng = np.random.default_rng(0)
    feats = [rng.random((int(rng.integers(1, 9)), 164)).astype(np.float32) for _ in range(50)]
    ys = rng.random(50)
    slow, fast = collate([chain(f) for f in feats], ys), _chain_batch(feats, ys)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(slow.inputs(), fast.inputs()))
    assert np.array_equal(slow.y.numpy(), fast.y.numpy())
    scores = NARFormerCostModel().predict_features(feats + [np.zeros((0, 164), np.float32)])
    assert scores.shape == (51,) and scores[-1] == 0 and np.isfinite(scores).all()
