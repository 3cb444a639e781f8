import json
import socket
import time
from pathlib import Path

import onnx
import pytest
from conftest import conv_model

from narformer_tvm.cli.main import main
from narformer_tvm.data.blocks import unpack_blocks
from narformer_tvm.data.labels import (
    REGIME_CORRECTED,
    SITTING_CORRECTED,
    block_spread,
    label_statistic,
    noise_floor,
    noise_floors,
)
from narformer_tvm.data.store import Store
from narformer_tvm.errors import InputError
from narformer_tvm.measure.backends import MeasureConfig, get_backend, list_backends
from narformer_tvm.measure.profiler import Summary, jobs_from_paths, jobs_from_zoo, repeat_subset, sweep
from narformer_tvm.measure.regime_gate import (REGIME_MARGIN, REGIME_WAIT_S, RegimeGate, fast_level, gate_settings,
                                               slow_in_hindsight)

FAST = dict(warmup_s=0.01, blocks=3, min_runs=2, max_runs=3, min_block_s=0.001)


@pytest.fixture
def models(tmp_path):
    paths = []
    for i, dims in enumerate([(1, 3, 16, 16), (1, 3, 32, 32), (2, 3, 24, 24)]):
        p = tmp_path / f"m{i}.onnx"
        onnx.save(conv_model(dims=dims), p)
        paths.append(p)
    return paths


def test_statistics_by_hand():
    blocks = [[3.0, 1.0, 2.0], [5.0, 4.0, 6.0]]
    assert label_statistic(blocks) == 2.0
    assert block_spread(blocks) == pytest.approx(5.0 / 2.0 - 1)


def test_registry_lists_and_rejects():
    assert {"onnxruntime", "tvm"} <= set(list_backends())
    with pytest.raises(InputError, match="available runtimes: .*onnxruntime"):
        get_backend("nope")


def test_onnxruntime_writes_correct_rows(tmp_path, models):
    store = Store(tmp_path / "d.db")
    cfg = MeasureConfig(kernels=True, **FAST)
    s = sweep(jobs_from_paths(models), store, cfg, reference_every=0)
    assert (s.measured, s.failed) == (3, 0)
    rows = store.rows()
    assert [r["name"] for r in rows] == ["m0", "m1", "m2"]
    assert [r["batch_size"] for r in rows] == [1, 1, 2]
    for r in rows:
        blocks = unpack_blocks(r["samples"])
        assert len(blocks) == 3 and all(2 <= len(b) <= 3 for b in blocks)
        assert r["latency_ms"] == pytest.approx(label_statistic(blocks), rel=1e-6)
    (cfg_row,) = store.configs()
    assert cfg_row["config"]["runtime"] == "onnxruntime" and cfg_row["config"]["threads"] >= 1
    assert cfg_row["fingerprint"]["onnxruntime"] and cfg_row["fingerprint"]["cpu"]
    kernels = store.db.execute("SELECT op, mean_us FROM kernels").fetchall()
    assert {"Conv"} <= {k[0] for k in kernels} and all(k[1] >= 0 for k in kernels)
    method = json.loads(store.db.execute("SELECT t.method FROM measurements m JOIN methods t ON t.id = m.method_id"
                                         " LIMIT 1").fetchone()[0])
    assert method["blocks"] == 3 and method["warmup_s"] == 0.01


@pytest.mark.slow
def test_tvm_runtime_writes_rows(tmp_path, models):
    pytest.importorskip("tvm")
    store = Store(tmp_path / "d.db")
    s = sweep(jobs_from_paths(models[:1]), store, MeasureConfig(runtime="tvm", **FAST), reference_every=0)
    assert (s.measured, s.failed) == (1, 0)
    assert store.configs()[0]["fingerprint"]["tvm"]
    assert json.loads(store.db.execute("SELECT info FROM measurements").fetchone()[0])["build_s"] > 0


def test_crash_and_hang_are_recorded_and_the_sweep_goes_on(tmp_path, models):
    crash, hang = tmp_path / "crash.onnx", tmp_path / "hang.onnx"
    onnx.save(conv_model(dims=(1, 3, 40, 40)), crash)  # distinct contents: equal files are one model
    onnx.save(conv_model(dims=(1, 3, 48, 48)), hang)
    store = Store(tmp_path / "d.db")
    cfg = MeasureConfig(runtime="faulty_backend:FaultyBackend", **FAST)
    s = sweep(jobs_from_paths([models[0], crash, hang, models[1]]), store, cfg, timeout=15, reference_every=0)
    assert (s.measured, s.failed) == (2, 2)
    errors = dict(store.db.execute("SELECT d.name, m.error FROM measurements m JOIN models d ON d.id=m.model_id"))
    assert errors["m0"] is None and errors["m1"] is None
    assert "crashed" in errors["crash"] and "timed out" in errors["hang"]


def test_interrupted_sweep_resumes_without_measuring_twice(tmp_path, models):
    store = Store(tmp_path / "d.db")
    cfg = MeasureConfig(**FAST)
    jobs = jobs_from_paths(models)

    def stop_after_two(kind, i, n, msg):
        if kind == "done" and i == 2:
            raise KeyboardInterrupt

    partial = Summary()
    with pytest.raises(KeyboardInterrupt):
        sweep(jobs, store, cfg, reference_every=0, progress=stop_after_two, summary=partial)
    assert (partial.measured, partial.skipped) == (2, 0) and partial.seconds > 0  # the caller can still report it
    first = dict(store.db.execute("SELECT model_id, measured_at || id FROM measurements"))
    assert len(first) == 2
    s = sweep(jobs, store, cfg, reference_every=0)
    assert (s.skipped, s.measured) == (2, 1)
    after = dict(store.db.execute("SELECT model_id, measured_at || id FROM measurements"))
    assert len(after) == 3 and all(after[k] == v for k, v in first.items())


def test_a_sweep_past_its_deadline_still_measures_one_model(tmp_path, models):
    store = Store(tmp_path / "d.db")
    s = sweep(jobs_from_paths(models[:3]), store, MeasureConfig(**FAST), reference_every=0, deadline=time.time() - 1)
    assert (s.measured, s.left) == (1, 2)  # a slow start cannot leave every rerun with nothing done
    s = sweep(jobs_from_paths(models[:3]), store, MeasureConfig(**FAST), reference_every=0, deadline=time.time() - 1)
    assert (s.skipped, s.measured, s.left) == (1, 1, 1)


def test_a_warm_up_loads_the_machine_first_and_keeps_nothing(tmp_path, models):
    store, heard = Store(tmp_path / "d.db"), []
    s = sweep(jobs_from_paths(models[:1]), store, MeasureConfig(**FAST), reference_every=0, warm_up_s=2.0,
              progress=lambda kind, i, n, msg: heard.append((kind, i, n)))
    kinds = [k for k, _, _ in heard]
    assert kinds[0] == "warm-up" and kinds.index("start") > kinds.index("warm-up")  # before the first job
    assert heard[kinds.index("start") - 1] == ("warm-up", 2, 2) and 2.0 <= s.warm_up_s < s.seconds
    assert s.measured == 1 and store.db.execute("SELECT COUNT(*) FROM reference").fetchone()[0] == 0
    again = sweep(jobs_from_paths(models[:1]), store, MeasureConfig(**FAST), reference_every=0, warm_up_s=60.0)
    assert again.skipped == 1 and again.warm_up_s == 0  # nothing left to measure: no warm-up


def test_zoo_sweep_with_repeat_pass_and_reference(tmp_path):
    store = Store(tmp_path / "d.db")
    cfg = MeasureConfig(**FAST)
    jobs = jobs_from_zoo(["nb201"], 4, 0)
    assert sweep(jobs, store, cfg, reference_every=2).measured == 4
    assert sweep(repeat_subset(jobs, 0.5), store, cfg, "repeat", reference_every=0).measured == 2
    # A loaded test machine flags some of these tiny runs noisy, and the floor leaves such pairs out (tested
    # below): clear the flags, the pairing is what is tested here.
    store.db.execute("UPDATE measurements SET noisy=0")
    noise = noise_floor(store)
    assert noise["min_block_median"]["pairs"] == 2 and noise["min_block_median"]["mape"] >= 0
    assert REGIME_CORRECTED not in noise  # ungated rows: nothing to correct
    # main-pass probes of 1.0, 1.2, 1.2 and 1.44 ms (typical: 1.2, the median over clean rows, so all four
    # are marked clean: a row this quick measurement flagged noisy would move it); the repeat pass was not gated
    main = {r["key"]: r["latency_ms"] for r in store.rows()}
    repeat = {r["key"]: r["latency_ms"] for r in store.rows(pass_="repeat")}
    probe = dict(zip(main, (1.0, 1.2, 1.2, 1.44)))
    for key, ms in probe.items():
        store.db.execute("UPDATE measurements SET info=?, noisy=0 WHERE pass='main' AND model_id=?",
                         (json.dumps({"probe_ms": [ms, 2.0], "probe_fast_ms": 1.0}), store.model_id(key)))
    expected = sum(abs(main[k] / (probe[k] / 1.2) ** 0.5 - y) / y for k, y in repeat.items()) / 2
    assert noise_floor(store)[REGIME_CORRECTED]["mape"] == pytest.approx(expected, rel=1e-3)  # float32 samples
    # a repeat the gate flagged noisy is not a label anything is scored on: its pair leaves the floor
    flagged = next(k for k in repeat if probe[k] == 1.2)  # the pair left has a correction to show
    store.db.execute("UPDATE measurements SET noisy=1 WHERE pass='repeat' AND model_id=?", (store.model_id(flagged),))
    (kept,) = set(repeat) - {flagged}
    assert noise_floor(store)["min_block_median"]["pairs"] == 1
    assert noise_floor(store)[REGIME_CORRECTED]["mape"] == pytest.approx(
        abs(main[kept] / (probe[kept] / 1.2) ** 0.5 - repeat[kept]) / repeat[kept], rel=1e-3)
    assert noise_floors(store, include_noisy=True)["repeat"]["min_block_median"]["pairs"] == 2
    assert store.db.execute("SELECT COUNT(*) FROM reference").fetchone()[0] >= 2
    source = json.loads(store.rows()[0]["source"])
    assert source["family"] == "nb201" and "arch" in source["raw"]


def test_cuda_target_fails_fast_without_a_gpu(capsys, tmp_path, models):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA-enabled onnxruntime is installed")
    for runtime, message in (("onnxruntime", "CUDAExecutionProvider"), ("tvm", "no CUDA device")):
        if runtime == "tvm":
            pytest.importorskip("tvm")
        t0 = time.time()
        with pytest.raises(SystemExit) as exc:
            main(["profile", str(models[0]), "--target", "cuda", "--runtime", runtime, "--db", str(tmp_path / "c.db")])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and "Traceback" not in err
        assert time.time() - t0 < 30


def test_profile_cli_end_to_end(capsys, tmp_path, models):
    db = tmp_path / "cli.db"
    with pytest.raises(SystemExit) as exc:
        main(["profile", str(models[0]), str(models[1]), "--db", str(db), "--repeat-pass", "0.5", "--regime-wait", "0"])
    captured = capsys.readouterr()
    assert exc.value.code == 0, captured.err
    assert "profiling summary" in captured.err and "noise floor" in captured.err
    with pytest.raises(SystemExit) as exc:
        main(["dataset", "info", str(db), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["summary"][0]["families"][0]["measured"] == 2
    gated = gate_settings(MeasureConfig()) is not None  # on by default where there is more than one core
    regimes = [json.loads(i).get("regime") for (i,) in Store(db).db.execute("SELECT info FROM measurements")]
    assert len(regimes) == 3 and all((r in ("fast", "slow")) if gated else r is None for r in regimes)
    with pytest.raises(SystemExit) as exc:
        main(["profile", "--db", str(db)])
    assert exc.value.code == 2 and "--zoo" in capsys.readouterr().err


def test_profile_variant_measures_the_quantised_model_as_its_own_row(capsys, tmp_path, models):
    db = tmp_path / "int8.db"
    with pytest.raises(SystemExit) as exc:
        main(["profile", str(models[1]), "--db", str(db), "--variant", "int8-dynamic", "--threads", "1",
              "--no-regime-gate"])
    assert exc.value.code == 0, capsys.readouterr().err
    with Store(db, readonly=True) as store:
        (key, graph), = store.db.execute("SELECT key, graph FROM models").fetchall()
        (latency,), = store.db.execute("SELECT latency_ms FROM measurements").fetchall()
    from narformer_tvm.graph.tokens import GraphTable

    assert key.endswith(":int8-dynamic") and latency > 0
    assert "ConvInteger" in GraphTable.from_bytes(graph).ops  # the row's graph is the quantised model's
    with pytest.raises(SystemExit) as exc:
        main(["profile", str(models[1]), "--db", str(db), "--variant", "int8-qdq", "--ort-candidates", "2"])
    assert exc.value.code == 2 and "--variant" in capsys.readouterr().err


def test_profile_repeats_one_sitting(capsys, tmp_path, models):
    db = tmp_path / "s.db"
    with pytest.raises(SystemExit) as exc:
        main(["profile", str(models[0]), str(models[1]), "--db", str(db), "--no-regime-gate"])
    assert exc.value.code == 0
    store = Store(db)
    with store.db:  # the second model's main pass becomes an earlier sitting
        store.db.execute("UPDATE measurements SET measured_at='2026-11-30T04:20:00' WHERE model_id=?",
                         (store.model_id(jobs_from_paths(models[1:2])[0].key),))
    assert len(store.keys_measured_between("2026-11-30T04:18", "2026-11-30T04:45")) == 1
    store.close()
    capsys.readouterr()
    window = ["--measured-between", "2026-11-30T04:18", "2026-11-30T04:45"]
    with pytest.raises(SystemExit) as exc:
        main(["profile", *map(str, models[:2]), "--db", str(db), "--no-regime-gate", "--repeat-pass", "1", *window])
    assert exc.value.code == 0, capsys.readouterr().err
    repeated = [r["name"] for r in Store(db).rows(pass_="repeat")]
    assert repeated == [Store(db).rows()[1]["name"]]  # only the model of that sitting
    # a second round on a later sitting adds a pass; the first round's row stays as it was
    first = Store(db).rows(pass_="repeat")[0]["latency_ms"]
    with pytest.raises(SystemExit) as exc:
        main(["profile", *map(str, models[:2]), "--db", str(db), "--no-regime-gate", "--repeat-pass", "1",
              "--repeat-round", "2", *window])
    assert exc.value.code == 0, capsys.readouterr().err
    assert [r["name"] for r in Store(db).rows(pass_="repeat2")] == repeated
    assert Store(db).rows(pass_="repeat")[0]["latency_ms"] == first
    assert Store(db).pass_names() == ["main", "repeat", "repeat2"]
    # (a row flagged noisy under a loaded test machine would leave the default floor: count every pair)
    assert noise_floors(Store(db), passes=["repeat2"], include_noisy=True)["repeat2"]["min_block_median"]["pairs"] == 1
    with pytest.raises(SystemExit) as exc:
        main(["dataset", "info", str(db)])
    assert exc.value.code == 0 and "main vs repeat2 pass" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["profile", str(models[0]), "--db", str(db), "--repeat-round", "2"])
    assert exc.value.code == 2 and "give --repeat-pass too" in capsys.readouterr().err
    for path, bad, message in ((db, ["2026-11-29T00:00", "2026-11-29T01:00"], "no model"),
                               (db, ["2026-11-30T05:00", "2026-11-30T04:00"], "is not before"),
                               (tmp_path / "typo.db", ["2026-11-30T04:18", "2026-11-30T04:45"], "no such dataset")):
        with pytest.raises(SystemExit) as exc:
            main(["profile", str(models[0]), "--db", str(path), "--repeat-pass", "1", "--measured-between", *bad])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "typo.db").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_rpc_profiling_on_loopback(tmp_path, models):
    pytest.importorskip("tornado")
    pytest.importorskip("tvm")
    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    port = _free_port()
    tracker = Tracker(host="127.0.0.1", port=port, port_end=port + 50, silent=True)
    server = rpc.Server(host="127.0.0.1", port=port + 100, port_end=port + 200, key="loopback-board",
                        tracker_addr=("127.0.0.1", tracker.port), silent=True)
    try:
        time.sleep(1)
        store = Store(tmp_path / "rpc.db")
        cfg = MeasureConfig(runtime="tvm", rpc_tracker=f"127.0.0.1:{tracker.port}", rpc_key="loopback-board", **FAST)
        s = sweep(jobs_from_paths(models[:1]), store, cfg, reference_every=0)
        assert (s.measured, s.failed) == (1, 0), s.failures
        info = json.loads(store.db.execute("SELECT info FROM measurements").fetchone()[0])
        assert info["remote"] is True and "remote" in info["device"]
        assert store.configs()[0]["config"]["rpc_key"] == "loopback-board"
    finally:
        server.terminate()
        tracker.terminate()


def deliverable_sigint() -> None:
    """In the child before exec: SIGINT unblocked and at its default, whatever the test process
    inherited (a shell starts background jobs with it ignored; a blocked signal stays pending), so
    that Python installs its KeyboardInterrupt handler. CI once saw the sweep run to the end."""
    import signal

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signame, group", [("SIGINT", False), ("SIGINT", True), ("SIGTERM", False)])
def test_ctrl_c_loses_nothing_and_the_same_command_resumes(tmp_path, models, signame, group):
    """A real SIGINT (Ctrl-C: a terminal sends it to the whole process group, the measuring worker
    too) or SIGTERM (`kill`) to a running `narformer-tvm profile`; then the same command finishes the rest."""
    import os
    import signal
    import subprocess
    import sys

    db = tmp_path / "int.db"
    many = []
    for i in range(5):
        p = tmp_path / f"slow{i}.onnx"  # a second each: tiny models would all finish before the signal
        onnx.save(conv_model(dims=(1, 3, 16 + 4 * i, 16)), p)
        many.append(str(p))
    cmd = [sys.executable, "-m", "narformer_tvm.cli", "profile", *many, "--db", str(db),
           "--runtime", "faulty_backend:FaultyBackend"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: (deliverable_sigint(), os.setpgid(0, 0)))
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for the first committed measurement
        if db.exists():
            try:
                with Store(db, readonly=True) as s:
                    if s.db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0] >= 1:
                        break
            except InputError:
                pass
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before the test saw a measurement: nothing to interrupt"
    if group:
        os.killpg(proc.pid, getattr(signal, signame))
    else:
        proc.send_signal(getattr(signal, signame))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert "profiling summary" in err  # the interrupted pass is summarised too
    with Store(db, readonly=True) as s:
        saved = s.db.execute("SELECT COUNT(*) FROM measurements WHERE latency_ms IS NOT NULL").fetchone()[0]
    assert 1 <= saved < 5
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    with Store(db, readonly=True) as s:
        rows = s.db.execute("SELECT COUNT(*), COUNT(DISTINCT model_id) FROM measurements").fetchone()
    assert rows == (5, 5)
    assert f"{saved}" in done.stderr  # the summary counts the models skipped as done before


def test_remeasure_noisy_redoes_only_flagged_rows(tmp_path, models):
    store = Store(tmp_path / "d.db")
    cfg = MeasureConfig(**FAST)
    jobs = jobs_from_paths(models)
    sweep(jobs, store, cfg, reference_every=0)
    store.db.execute("UPDATE measurements SET noisy = (model_id = 1)")  # tiny FAST runs are often noisy
    store.db.commit()
    s = sweep(jobs, store, cfg, reference_every=0, remeasure_noisy=True)
    assert (s.skipped, s.measured) == (2, 1)


def test_regime_gate_settings_follow_the_configuration():
    assert gate_settings(MeasureConfig(threads=2)) is not None
    assert gate_settings(MeasureConfig(threads=1)) is None  # one thread: no regimes to gate
    assert gate_settings(MeasureConfig(threads=2, runtime="tvm")) is None
    assert gate_settings(MeasureConfig(threads=2), wanted=False) is None
    assert gate_settings(MeasureConfig(threads=1), wanted=True) is not None
    assert gate_settings(MeasureConfig(threads=2), wait_s=0) == {"calibrate_s": 0, "wait_s": 0}
    # cli.py states the default itself (it imports this module lazily): the two must agree
    from narformer_tvm.cli.profile_cmd import profile as profile_command

    assert next(p for p in profile_command.params if p.name == "regime_wait").default == REGIME_WAIT_S


def test_regime_gate_probes_a_real_network(tmp_path):
    cfg = MeasureConfig(threads=2, **FAST)
    gate = RegimeGate(get_backend("onnxruntime"), cfg, tmp_path, calibrate_s=0, wait_s=0)
    assert 0 < gate.fast_ms < 100 and (tmp_path / "probe.onnx").exists()
    assert gate.is_fast(gate.fast_ms) and gate.is_fast(REGIME_MARGIN * gate.fast_ms * 0.99)
    assert not gate.is_fast(REGIME_MARGIN * gate.fast_ms * 1.01)
    p = gate.wait_fast()  # no wait: returns the one probe, whatever the regime
    assert p >= gate.fast_ms


def test_gated_sweep_records_the_regime_and_flags_slow_rows(tmp_path, models):
    store = Store(tmp_path / "d.db")
    s = sweep(jobs_from_paths(models[:2]), store, MeasureConfig(threads=2, **FAST), reference_every=0,
              gate={"calibrate_s": 0, "wait_s": 0})
    assert s.measured == 2
    for info, noisy in store.db.execute("SELECT info, noisy FROM measurements"):
        info = json.loads(info)
        assert len(info["probe_ms"]) == 2 and info["probe_fast_ms"] <= min(info["probe_ms"])
        assert info["regime"] in ("fast", "slow")
        assert noisy or info["regime"] == "fast"  # a slow-regime row is never clean


def test_gate_starts_from_the_fast_level_the_dataset_knows(tmp_path, models):
    # a sweep that starts (and stays) in a regime slower than earlier sweeps of the dataset saw must not take
    # it for the fast one: the earlier rows here claim a probe level no machine reaches
    store = Store(tmp_path / "d.db")
    gate = {"calibrate_s": 0, "wait_s": 0}
    sweep(jobs_from_paths(models[:1]), store, MeasureConfig(threads=2, **FAST), reference_every=0, gate=gate)
    with store.db:
        store.db.execute("UPDATE measurements SET noisy=0, info=json_set(info, '$.probe_ms', json('[0.0001, 0.0001]'))")
    sweep(jobs_from_paths(models[1:2]), store, MeasureConfig(threads=2, **FAST), reference_every=0, gate=gate)
    info, noisy = store.db.execute("SELECT info, noisy FROM measurements ORDER BY id DESC").fetchone()
    assert json.loads(info)["probe_fast_ms"] == 0.0001 and json.loads(info)["regime"] == "slow" and noisy


def test_fast_level_is_a_low_quantile_not_one_lucky_probe():
    # a machine whose probe jitters with no second regime (seen on an Intel VM): one probe far below the rest
    # must not make the typical probe look slow
    jitter = [0.50] + [0.60 + 0.0008 * i for i in range(100)]
    assert min(jitter) * REGIME_MARGIN < 0.66 <= REGIME_MARGIN * fast_level(jitter)
    # two regimes, the slow one 75% slower and holding half of the time: the level is the fast one's
    two = [0.22, 0.39] * 50
    assert fast_level(two) == 0.22 and 0.39 > REGIME_MARGIN * fast_level(two)
    assert fast_level(two, known_ms=0.2) == 0.2 and fast_level([0.3] * 20, known_ms=None) == 0.3
    assert fast_level([]) == float("inf")


def test_rows_judged_fast_early_are_flagged_when_a_faster_level_appears(tmp_path, models):
    # (row, slowest probe, fast level when measured, already noisy)
    gated = [(1, 1.30, 1.25, False),  # fast against 1.25 then; 1.30 > 1.15 x 1.0 (the typical level) in hindsight
             (2, 1.10, 1.00, False),  # fast either way
             (3, 1.40, 1.00, True)]   # already flagged
    assert slow_in_hindsight(gated) == [1] and slow_in_hindsight([]) == []
    # one row judged against a level from a lucky probe does not set the bar for the others
    assert slow_in_hindsight([(1, 1.1, 1.0, False), (2, 1.1, 1.0, False), (3, 1.1, 0.8, False)]) == []
    store = Store(tmp_path / "d.db")
    sweep(jobs_from_paths(models[:1]), store, MeasureConfig(**FAST), reference_every=0)
    (row,) = store.db.execute("SELECT id FROM measurements").fetchone()
    store.flag_noisy([row])
    assert [r["noisy"] for r in store.rows()] == [True]


def test_regime_correction_bench_agrees_with_the_noise_floor(tmp_path):
    """examples/bench_regime_correction.py's exponents 0 and 0.5 are noise_floor's raw and corrected labels."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    db = root / "profiles" / "cpu-onnxruntime-zen5" / "published"
    out = tmp_path / "table.md"
    subprocess.run([sys.executable, str(root / "examples" / "bench_regime_correction.py"), str(db), "--out", str(out)],
                   check=True, capture_output=True)
    cells = [c.strip() for c in out.read_text().strip().splitlines()[-1].strip("|").split("|")]
    with Store(db, readonly=True) as store:
        noise = noise_floor(store)
    assert cells[1] == str(noise["min_block_median"]["pairs"])
    assert cells[2].startswith(f"{100 * noise['min_block_median']['mape']:.2f}%")
    assert cells[4].startswith(f"{100 * noise[REGIME_CORRECTED]['mape']:.2f}%")
    assert cells[7].startswith(f"{100 * noise[SITTING_CORRECTED]['mape']:.2f}%")
