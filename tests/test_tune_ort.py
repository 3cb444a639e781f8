import copy
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from narformer_plugins.ort import random_feeds

from narformer_tvm.cli.main import cli, main
from narformer_tvm.errors import InputError
from narformer_tvm.integrations.ort_config_predictor import (
    config_predictor,
    load_config_samples,
)
from narformer_tvm.integrations.ort_tuning import (
    N_CONFIG,
    Candidate,
    Ranked,
    choose_to_measure,
    config_vector,
    fidelity_checker,
    is_default,
    open_session,
    predict_candidates,
    search_space,
    tune_ort,
)
from narformer_tvm.measure.backends import MeasureConfig
from narformer_tvm.measure.ort_variants import VARIANTS, make_variant
from narformer_tvm.model.predictor import new_predictor

FAST = dict(warmup_s=0.01, blocks=3, min_runs=2, max_runs=3, min_block_s=0.001)
# int8 outputs of random-weight networks on random inputs: relative L2 error bound
INT8_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def small_net(tmp_path_factory):
    """A small CNN with real weights (conv, BN, ReLU, pooling, linear), exported by torch."""
    import torch
    from torch import nn

    from narformer_tvm.measure.families import export_onnx

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    path = tmp_path_factory.mktemp("net") / "net.onnx"
    export_onnx(net, path, resolution=32)
    return path


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A transformer-like block (LayerNorm, Linear on a sequence: MatMuls) with real weights."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.LayerNorm(32), nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32)).eval()
    path = tmp_path_factory.mktemp("enc") / "enc.onnx"
    torch.onnx.export(net, (torch.randn(1, 16, 32),), str(path), opset_version=17, dynamo=False)
    return path


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "int8-dynamic-matmul"])
def test_each_variant_runs_and_matches_the_original(small_net, tmp_path, variant):
    ref_sess = ort.InferenceSession(str(small_net), providers=["CPUExecutionProvider"])
    feeds = random_feeds(ref_sess, seed=7)
    ref = ref_sess.run(None, feeds)[0]
    path = make_variant(small_net, variant, tmp_path / f"{variant}.onnx")
    onnx.checker.check_model(str(path))
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    err = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    tol = {"fp32": 1e-6, "ort-optimized": 1e-5, "fp16": 1e-2}.get(variant, INT8_TOLERANCE)
    assert err < tol, (variant, err)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    expected = {"int8-dynamic": "DynamicQuantizeLinear", "int8-qdq": "QuantizeLinear", "fp16": "Cast"}.get(variant)
    assert expected is None or expected in ops, ops


def test_unknown_variant_is_an_input_error(small_net, tmp_path):
    with pytest.raises(InputError, match="unknown model variant"):
        make_variant(small_net, "int4", tmp_path / "x.onnx")


def test_matmul_only_dynamic_int8_quantises_the_matmuls_of_transformers(small_net, tiny_encoder, tmp_path):
    from narformer_tvm.measure.ort_variants import applies

    assert applies(tiny_encoder, "int8-dynamic-matmul") and not applies(small_net, "int8-dynamic-matmul")
    with pytest.raises(InputError, match="no MatMul"):
        make_variant(small_net, "int8-dynamic-matmul", tmp_path / "x.onnx")
    path = make_variant(tiny_encoder, "int8-dynamic-matmul", tmp_path / "m.onnx")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "MatMulInteger" in ops and "MatMul" not in ops and "LayerNormalization" in ops
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 16, 32)).astype(np.float32)}
    name = ort.InferenceSession(str(tiny_encoder)).get_inputs()[0].name
    ref, out = (ort.InferenceSession(str(p)).run(None, {name: feeds["input"]})[0] for p in (tiny_encoder, path))
    # coarse (about 20% here, on random weights): the reason every lossy candidate is checked before use
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.5


def test_search_space_and_configuration_features():
    cpu = search_space("llvm", cores=2)
    # 5 variants x (1 or 2 intra-op threads, sequential or parallel with 2 inter-op) x 4 levels
    assert len(cpu) == len(set(cpu)) == 5 * 4 * 4
    assert sum(is_default(c) for c in cpu) == 1
    assert not any(c.execution_mode == "parallel" and c.resolved().inter_threads < 2 for c in cpu)
    safe = search_space("llvm", cores=2, lossy=False)
    assert {c.variant for c in safe} == {"fp32", "ort-optimized"} and len(safe) == 2 * 16
    assert len(search_space("llvm", cores=8)) == 5 * (2 + 2 * 2) * 4  # inter-op {2, 8} on 8 cores
    assert not any(c.variant.startswith("int8") for c in search_space("cuda", cores=2))
    assert {c.variant for c in search_space("cuda", cores=2, lossy=False)} == {"fp32", "ort-optimized"}
    with pytest.raises(InputError, match="TensorRT"):
        search_space("tensorrt", cores=2, providers=["CPUExecutionProvider"])
    trt = search_space("tensorrt", cores=2, providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    assert {c.variant for c in trt} == {"fp32"} and trt[0].session_options()["providers"] == ["TensorrtExecutionProvider"]
    # int8-dynamic-matmul shares int8-dynamic's configuration features (the graph tells them apart)
    vectors = {tuple(config_vector(c, 2)) for c in cpu}
    assert len(vectors) == len(cpu) - 16 and all(len(v) == N_CONFIG for v in vectors)
    with pytest.raises(InputError):
        search_space("opencl")
    opts = Candidate("int8-qdq", 1, "basic", "parallel", inter_threads=2).session_options()
    assert opts["graph_optimization_level"] == "ORT_ENABLE_BASIC" and opts["execution_mode"] == "ORT_PARALLEL"
    assert (opts["intra_op_num_threads"], opts["inter_op_num_threads"]) == (1, 2)


def test_choose_to_measure_takes_top_k_the_hopeful_uncertain_and_the_default():
    space = search_space("llvm", cores=2)
    default = next(c for c in space if is_default(c))
    others = [c for c in space if c is not default]
    ranked = [Ranked(others[0], 1.0, 0.0), Ranked(others[1], 1.1, 0.0), Ranked(others[2], 1.2, 0.0),
              Ranked(others[3], 1.5, 0.01),  # certain and worse: not measured
              Ranked(others[4], 2.0, 0.6),  # could be best (2.0 - 2 * 0.6 < 1.0)
              Ranked(default, 3.0, 0.1), Ranked(others[5], error="could not quantise")]
    chosen = choose_to_measure(ranked, top_k=3, explore=2)
    assert [r.candidate for r in chosen] == [others[0], others[1], others[2], others[4], default]
    assert [r.reason for r in chosen] == ["top-k"] * 3 + ["uncertain", "default"]
    for r in ranked:
        r.reason = ""
    refused = {others[1]}  # the output check refuses the second best: the next one takes its place
    chosen = choose_to_measure(ranked, top_k=3, explore=0, accept=lambda r: r.candidate not in refused)
    assert [r.candidate for r in chosen] == [others[0], others[2], others[3], default]


@pytest.fixture(scope="module")
def small_config_predictor():
    base = new_predictor(d_model=32, n_layers=1)
    pred = config_predictor(base, ensemble=2)
    pred.metadata["cores"] = 2
    return pred


def test_config_predictor_starts_from_the_base_and_sees_the_configuration(small_config_predictor, small_net):
    from narformer_tvm.graph.onnx_graph import build_graph
    from narformer_tvm.graph.tokens import encode_table, table
    from narformer_tvm.integrations.ort_tuning import with_config

    t = table(build_graph(small_net))
    a, b = (with_config(t, c, 2) for c in (Candidate("fp32", 1, "all"), Candidate("fp32", 2, "all")))
    assert a.static.shape == (6 + N_CONFIG,)
    assert small_config_predictor.config.n_static == 6 + N_CONFIG
    pred = copy.deepcopy(small_config_predictor)
    for m in pred.models:  # configuration columns start at zero; give them (and the zero-init head) weights
        assert float(m.static[0].weight.detach()[:, 6:].abs().sum()) == 0.0
        m.static[0].weight.data[:, 6:] = 0.5
        m.head[-1].weight.data[:] = 0.1
    enc = [encode_table(x) for x in (a, b)]
    mean, _ = pred.predict_encoded(enc)
    assert mean[0] != mean[1]


def test_tune_ort_measures_only_the_chosen_and_writes_a_usable_configuration(small_config_predictor, small_net,
                                                                              tmp_path):
    result = tune_ort(small_net, small_config_predictor, tmp_path / "out", top_k=2, explore=1,
                      cfg=MeasureConfig(**FAST), rounds=2)
    assert len(result.ranked) == 32 and not any(r.candidate.lossy for r in result.ranked)  # lossless by default
    assert 3 <= len(result.measured) <= 4 and result.measured[-1].reason == "default"
    assert all(r.measured_ms and r.measured_ms > 0 for r in result.measured), [r.error for r in result.measured]
    assert all(r.fidelity["passed"] and r.fidelity["rel_error"] < 1e-4 for r in result.measured)
    assert result.best.measured_ms == min(r.measured_ms for r in result.measured)
    assert result.speedup is not None and result.speedup >= 1.0
    from narformer_tvm.data.store import Store

    with Store(tmp_path / "out" / "measurements.db", readonly=True) as store:  # two interleaved passes
        passes = [p for (p,) in store.db.execute("SELECT pass FROM measurements")]
    assert sorted(set(passes)) == ["main", "repeat1"] and len(passes) == 2 * len(result.measured)
    spec = json.loads((tmp_path / "out" / "session_options.json").read_text())
    assert spec["variant"] == result.best.candidate.variant
    fid = spec["fidelity"]
    assert fid["random_inputs"] and "random inputs" in fid["data"] and fid["max_error"] == 0.01
    assert fid["result"]["passed"] and not fid["lossy_variants_considered"] and fid["validated"]
    assert spec["measurement"]["rounds"] == 2
    sess = open_session(tmp_path / "out" / "session_options.json")
    assert sess.run(None, random_feeds(sess))[0].shape == (1, 10)
    assert len(json.loads((tmp_path / "out" / "candidates.json").read_text())) == 32


@pytest.fixture(scope="module")
def int8_breaker(tmp_path_factory):
    """Static per-tensor int8 cannot hold this network: one channel of its activations is 10^4 times
    the others, and the output reads only the small ones."""
    import torch
    from torch import nn

    from narformer_tvm.measure.families import export_onnx

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        net[0].weight[0] *= 1e4
        net[0].bias[0] = 1e4
        net[2].weight[:, 0] = 0.0  # the huge channel does not reach the output
    path = tmp_path_factory.mktemp("breaker") / "breaker.onnx"
    export_onnx(net.eval(), path, resolution=8)
    return path


def test_int8_that_breaks_the_outputs_is_rejected_under_a_tight_tolerance_and_accepted_under_a_loose_one(
        small_config_predictor, int8_breaker, tmp_path):
    from narformer_tvm.measure import fidelity
    from narformer_tvm.measure.eval_data import random_data

    data = random_data(int8_breaker)
    reference = fidelity.run(int8_breaker, data.feeds)
    qdq = make_variant(int8_breaker, "int8-qdq", tmp_path / "q.onnx", calibration=data.feeds)
    broken = fidelity.check(qdq, data.feeds, reference)
    assert not broken.passed and broken.rel_error > 0.1, broken
    assert fidelity.check(qdq, data.feeds, reference, max_error=10.0).passed
    assert fidelity.check(int8_breaker, data.feeds, reference).passed  # the fp32 model itself

    # tune-ort's choice with a ranking that puts static int8 first: the check stops it under 0.01, not under 10
    ranked = predict_candidates(int8_breaker, small_config_predictor, search_space("llvm", 2), tmp_path / "v",
                                calibration=data.feeds)
    ranked.sort(key=lambda r: (r.candidate.variant != "int8-qdq", r.predicted_ms or 0))
    tight = choose_to_measure(ranked, 2, 0, accept=fidelity_checker(int8_breaker, data, max_error=0.01))
    assert not any(r.candidate.variant == "int8-qdq" for r in tight)
    assert all("fidelity check failed" in r.error for r in ranked[:16] if r.fidelity)
    for r in ranked:
        r.error, r.fidelity, r.reason = None, None, ""
    loose = choose_to_measure(ranked, 2, 0, accept=fidelity_checker(int8_breaker, data, max_error=10.0))
    assert [r.candidate.variant for r in loose[:2]] == ["int8-qdq", "int8-qdq"]


def test_tune_ort_records_rejected_lossy_candidates_and_the_data_checked(small_config_predictor, int8_breaker,
                                                                         tmp_path):
    from narformer_tvm.measure.eval_data import random_data

    data = random_data(int8_breaker)
    data.source = str(tmp_path / "samples")  # as if they were the user's: then int8 counts as validated
    result = tune_ort(int8_breaker, small_config_predictor, tmp_path / "out", top_k=64, explore=0,
                      cfg=MeasureConfig(**FAST), lossy=True, rounds=1, data=data, gate=None)
    assert any(r.candidate.variant == "int8-qdq" for r in result.rejected)
    assert result.best.candidate.variant != "int8-qdq" and result.best.fidelity["passed"]
    spec = json.loads((tmp_path / "out" / "session_options.json").read_text())
    fid = spec["fidelity"]
    assert fid["lossy_variants_considered"] and not fid["random_inputs"] and fid["validated"]
    assert "8 samples" in fid["data"] and str(tmp_path / "samples") in fid["data"]
    assert any(r["candidate"].startswith("int8-qdq") and not r["passed"] for r in fid["rejected"])


def test_profile_collects_candidate_rows_that_train_a_config_predictor(small_net, tmp_path):
    from narformer_tvm.learn.train import FitConfig, TrainOptions, train_predictor

    db = tmp_path / "cfg.db"
    runner = CliRunner()
    res = runner.invoke(cli, ["profile", str(small_net), "--db", str(db), "--ort-candidates", "3", "--regime-wait", "0"])
    assert res.exit_code == 0, res.output
    samples = load_config_samples(db, include_noisy=True)  # rows measured beside other work may be flagged
    assert len(samples) == 4 and len({s.candidate for s in samples}) == 4
    assert all(s.table.static.shape == (6 + N_CONFIG,) for s in samples)
    base = new_predictor(d_model=32, n_layers=1)
    pred = config_predictor(base, ensemble=1)
    pred = train_predictor(samples, samples[:1], TrainOptions(fit=FitConfig(epochs=2, batch_size=2)), init=pred)
    assert pred.metadata["train_samples"] == 4
    res = runner.invoke(cli, ["profile", str(small_net), "--db", str(db), "--ort-candidates", "three"])
    assert res.exit_code == 2 and "positive number" in res.output


def test_cli_trains_a_config_predictor_and_tune_ort_uses_it(small_net, tmp_path, monkeypatch):
    from narformer_tvm.learn.shipping import write_profile

    db, cfgp, out = tmp_path / "d.db", tmp_path / "cfg.pt", tmp_path / "out"
    runner = CliRunner()
    args = ["profile", str(small_net), "--db", str(db), "--ort-candidates", "2", "--regime-wait", "0"]
    assert runner.invoke(cli, args).exit_code == 0
    profile = tmp_path / "profiles" / "unit-cpu"
    write_profile(new_predictor(d_model=32, n_layers=1), profile)
    monkeypatch.setenv("NARFORMER_PROFILES", str(tmp_path / "profiles"))
    res = runner.invoke(cli, ["tune-ort", str(small_net), "--predictor", "unit-cpu", "--out", str(out)])
    assert res.exit_code != 0 and "no configuration-aware predictor" in str(res.exception)
    res = runner.invoke(cli, ["train", "--task", "ort-configs", "--db", str(db), "--finetune", "unit-cpu", "--out",
                              str(cfgp), "--split", "all", "--epochs", "2", "--include-noisy", "--profile-dir",
                              str(profile)])
    assert res.exit_code == 0, res.output
    assert json.loads((profile / "profile.json").read_text())["ort_configs"] == "ort-configs.pt"
    res = runner.invoke(cli, ["tune-ort", str(small_net), "--predictor", "unit-cpu", "--out", str(out), "--top-k", "1",
                              "--explore", "0"])
    assert res.exit_code == 0, res.output
    assert "speedup vs default" in res.output and "session_options:" in res.output
    assert json.loads((out / "session_options.json").read_text())["session_options"]["providers"]
    write_profile(new_predictor(d_model=32, n_layers=1), profile)  # retraining the latency predictor ...
    assert json.loads((profile / "profile.json").read_text())["ort_configs"] == "ort-configs.pt"  # ... keeps it


def test_tune_ort_bad_inputs_are_clear(tmp_path, small_net, capsys):
    def run(*argv):
        with pytest.raises(SystemExit) as exc:
            main(list(map(str, argv)))
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return exc.value.code, err

    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    code, err = run("tune-ort", bad, "--out", tmp_path / "o")
    assert code != 0 and "bad.onnx: not a readable ONNX model" in err
    code, err = run("tune-ort", tmp_path / "missing.onnx", "--out", tmp_path / "o")
    assert code == 2 and "missing.onnx" in err
    code, err = run("tune-ort", small_net, "--out", tmp_path / "o", "--predictor", "nope")
    assert code != 0 and "no predictor 'nope'" in err and "hint:" in err
    (tmp_path / "samples").mkdir()
    np.save(tmp_path / "samples" / "s0.npy", np.zeros((1, 3, 16, 16), np.float32))
    code, err = run("tune-ort", small_net, "--out", tmp_path / "o", "--allow-lossy", "--calibration-data",
                    tmp_path / "samples")
    assert code == 2 and "s0.npy" in err and "the model takes 1x3x32x32" in err
    code, err = run("tune-ort", small_net, "--out", tmp_path / "o", "--accuracy-check", "nowhere_module:fn")
    assert code == 2 and "cannot import nowhere_module" in err


def test_candidate_jobs_are_reproducible_grouped_by_model_and_split_by_source():
    from narformer_tvm.graph.tokens import SCALARS, STATIC, GraphTable
    from narformer_tvm.integrations.ort_config_predictor import split_by_source
    from narformer_tvm.integrations.ort_tuning import candidate_jobs
    from narformer_tvm.learn.samples import Sample
    from narformer_tvm.measure.profiler import Job

    jobs = [Job(f"k{i}", f"m{i}", family="f" if i < 10 else "g") for i in range(20)]
    a, b = candidate_jobs(jobs, 3, seed=0), candidate_jobs(jobs, 3, seed=0)
    assert [(j.key, j.config) for j in a] == [(j.key, j.config) for j in b] and len(a) == 80
    assert [j.key.split(":")[0] for j in a[:4]] == ["k0"] * 4 and a[0].config is None  # the default first
    assert len(candidate_jobs(jobs[:1], 0, exhaustive=True)) == 64
    empty = GraphTable([], np.zeros((0, len(SCALARS)), dtype=np.int64), np.zeros((0, 2), dtype=np.int64),
                       np.zeros(len(STATIC), dtype=np.float32))
    samples = [Sample(f"{j.key}@{n}", j.name, j.family, empty, 1.0, model_id=n) for n, j in enumerate(a)]
    train, test = split_by_source(samples)
    src = lambda idx: {samples[i].key.split("@")[0].split(":")[0] for i in idx}  # noqa: E731
    assert src(test) == {"k9", "k19"} and not src(train) & src(test) and len(train) + len(test) == 80
