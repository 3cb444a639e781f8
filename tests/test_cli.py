import json
import subprocess
import sys

import onnx
import pytest
from conftest import conv_model
from onnx import helper

from narformer_tvm import __version__
from narformer_tvm.cli.main import main
from narformer_tvm.graph.tokens import FeatureConfig
from narformer_tvm.model.predictor import new_predictor


def run(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main(list(map(str, argv)))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return exc.value.code, out, err


@pytest.fixture
def predictor_file(tmp_path):
    path = tmp_path / "predictor.pt"
    p = new_predictor(FeatureConfig(n_freqs=4), d_model=32, n_groups=4)
    p.profile = {"name": "unit-test"}
    p.save(path)
    return path


def test_version_and_help(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and __version__ in out
    for cmd in ([], ["inspect"], ["estimate"]):
        code, out, _ = run(capsys, *cmd, "--help")
        assert code == 0 and "Usage:" in out


def test_usage_errors_exit_2(capsys):
    code, _, err = run(capsys, "estimate")
    assert code == 2 and "Missing argument" in err
    code, _, err = run(capsys, "frobnicate")
    assert code == 2 and "No such command" in err
    code, _, err = run(capsys, "train", "--db", "x.db", "--precision", "bf16", "--out", "p.pt")
    assert code == 2 and "--precision applies to the accuracy task" in err
    code, _, err = run(capsys, "evaluate", "--db", "x.db", "--ema", "0.999", "--out", "r")
    assert code == 2 and "--ema applies to the accuracy task" in err
    code, _, err = run(capsys, "train", "--db", "x.db", "--no-layer-fusion", "--out", "p.pt")
    assert code == 2 and "--no-layer-fusion applies to the accuracy task" in err
    code, _, err = run(capsys, "evaluate", "--db", "x.db", "--block", "l2", "--out", "r")
    assert code == 2 and "--block applies to the accuracy task" in err
    code, _, err = run(capsys, "train", "--db", "x.db", "--rank-weight", "0.1", "--out", "p.pt")
    assert code == 2 and "--rank-weight applies to the accuracy task" in err
    for seeds in ("0", "3-1", "1,x", "-2"):
        code, _, err = run(capsys, "evaluate", "--task", "accuracy", "--seeds", seeds, "--out", "r")
        assert code == 2 and "neither a seed count" in err and "one seed alone: 2-2" in err, seeds
    code, _, err = run(capsys, "train", "--db", "x.db", "--gffn-norm", "--out", "p.pt")
    assert code == 2 and "--gffn-norm/--no-gffn-norm applies to the accuracy task" in err
    code, _, err = run(capsys, "train", "--db", "x.db", "--ensemble", "2", "--members", "1-2", "--out", "p.pt")
    assert code == 2 and "ensemble members are 0 to 1 (--ensemble 2)" in err
    code, _, err = run(capsys, "train", "--db", "x.db", "--members", "one", "--out", "p.pt")
    assert code == 2 and "not a list or range of indices" in err


def test_inspect_table_and_json(capsys, conv_onnx):
    code, out, _ = run(capsys, "inspect", conv_onnx)
    assert code == 0 and "Conv" in out and "MACs 6.91 k" in out and "2 layers" in out
    code, out, _ = run(capsys, "inspect", conv_onnx, "--json")
    data = json.loads(out)
    assert data["macs"] == 6912 and data["op_histogram"] == {"Conv": 1, "Relu": 1}
    assert data["layers"][0]["op"] == "Conv" and data["unknown_ops"] == {}


def test_inspect_reports_unknown_ops(capsys, tmp_path):
    m = conv_model()
    m.graph.node.append(helper.make_node("Celu", ["y"], ["z"]))
    m.graph.node.append(helper.make_node("Mod", ["z", "z"], ["w"], fmod=1))
    m.graph.output[0].name = "w"
    onnx.save(m, tmp_path / "u.onnx")
    code, out, _ = run(capsys, "inspect", tmp_path / "u.onnx", "--json")
    assert code == 0 and json.loads(out)["unknown_ops"] == {"Mod": 1}


BAD_FILES = {
    "missing.onnx": (None, "no such file"),
    "empty.onnx": (b"", "file is empty"),
    "text.onnx": (b"hello, I am not a model\n", "not a readable ONNX model"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_files(capsys, tmp_path, name, predictor_file):
    content, message = BAD_FILES[name]
    if content is not None:
        (tmp_path / name).write_bytes(content)
    for cmd in (["inspect"], ["estimate", "--predictor", predictor_file]):
        code, _, err = run(capsys, *cmd, tmp_path / name)
        assert code == 2 and message in err and str(tmp_path / name) in err and "hint:" in err


def test_truncated_file(capsys, tmp_path, exported):
    data = exported("resnet18").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 3])
    code, _, err = run(capsys, "inspect", tmp_path / "cut.onnx")
    assert code == 2 and "cut.onnx" in err and "error:" in err


def test_directory_unsupported_opset_and_empty_graph(capsys, tmp_path):
    code, _, err = run(capsys, "inspect", tmp_path)
    assert code == 2 and "is a directory" in err
    onnx.save(conv_model(opset=30), tmp_path / "future.onnx", )
    code, _, err = run(capsys, "inspect", tmp_path / "future.onnx")
    assert code == 2 and "opset 30 is not supported" in err
    onnx.save(helper.make_model(helper.make_graph([], "e", [], []), opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "empty_graph.onnx")
    code, _, err = run(capsys, "inspect", tmp_path / "empty_graph.onnx")
    assert code == 2 and "no nodes" in err


def test_dynamic_dims_need_input_shape(capsys, tmp_path):
    onnx.save(conv_model(dims=(1, 3, "height", "width")), tmp_path / "dyn.onnx")
    code, _, err = run(capsys, "inspect", tmp_path / "dyn.onnx")
    assert code == 2 and "input 'x' has dynamic dimension 2 ('height')" in err
    assert "--input-shape x=1x3xNxN" in err
    code, out, _ = run(capsys, "inspect", tmp_path / "dyn.onnx", "--input-shape", "x=1x3x16x16", "--json")
    assert code == 0 and json.loads(out)["macs"] == 4 * 16 * 16 * 27
    code, _, err = run(capsys, "inspect", tmp_path / "dyn.onnx", "--input-shape", "x=1x3x16")
    assert code == 2
    code, _, err = run(capsys, "inspect", tmp_path / "dyn.onnx", "--input-shape", "y=1x3x16x16")
    assert code == 2 and "not a model input" in err and "model inputs: x" in err
    code, _, err = run(capsys, "inspect", tmp_path / "dyn.onnx", "--input-shape", "x:1x3")
    assert code == 2 and "bad --input-shape" in err


def test_estimate_without_a_predictor_says_how_to_get_one(capsys, conv_onnx, monkeypatch, tmp_path):
    monkeypatch.setenv("NARFORMER_PROFILES", str(tmp_path / "none"))
    code, _, err = run(capsys, "estimate", conv_onnx, "--predictor", "no-such-profile")
    assert code == 2 and "no predictor 'no-such-profile'" in err and "narformer-tvm train" in err


def test_estimate_one_many_and_json(capsys, tmp_path, conv_onnx, predictor_file, exported):
    code, out, _ = run(capsys, "estimate", conv_onnx, "--predictor", predictor_file)
    assert code == 0 and out.strip().startswith(str(conv_onnx)) and out.strip().endswith("ms")
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("resnet18", "mobilenet_v2"):
        (folder / f"{name}.onnx").write_bytes(exported(name).read_bytes())
    code, out, _ = run(capsys, "estimate", folder, conv_onnx, "--predictor", predictor_file)
    assert code == 0 and "resnet18.onnx" in out and "mobilenet_v2.onnx" in out and "unit-test" in out
    code, out, _ = run(capsys, "estimate", folder, "--predictor", predictor_file, "--json")
    results = json.loads(out)["results"]
    assert [r["model"].endswith(n) for r, n in zip(results, ("mobilenet_v2.onnx", "resnet18.onnx"))] == [True, True]
    assert all(r["latency_ms"] > 0 for r in results)


def test_estimate_reports_bad_models_and_still_predicts_the_rest(capsys, tmp_path, conv_onnx, predictor_file):
    (tmp_path / "bad.onnx").write_bytes(b"junk")
    code, out, err = run(capsys, "estimate", conv_onnx, tmp_path / "bad.onnx", "--predictor", predictor_file)
    assert code == 2 and "conv.onnx" in out and "bad.onnx" in err
    empty = tmp_path / "emptydir"
    empty.mkdir()
    code, _, err = run(capsys, "estimate", empty, "--predictor", predictor_file)
    assert code == 2 and "holds no .onnx files" in err


def test_console_script_runs_as_a_process(conv_onnx):
    proc = subprocess.run([sys.executable, "-m", "narformer_tvm.cli", "inspect", str(conv_onnx), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["nodes"] == 2
    proc = subprocess.run([sys.executable, "-m", "narformer_tvm.cli", "inspect", "/no/such.onnx"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "no such file" in proc.stderr


def test_estimate_uses_the_shipped_profile_by_default(capsys):
    from pathlib import Path

    from narformer_tvm.profiles import default_profile, list_profiles

    assert default_profile() in list_profiles()
    example = Path(__file__).resolve().parents[1] / "examples" / "squeezenet1_1.onnx"
    code, out, err = run(capsys, "estimate", example, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["profile"]["name"] == default_profile() and data["profile"]["runtime"] == "onnxruntime"
    assert 0.01 < data["results"][0]["latency_ms"] < 1000


def test_seed_lists_counts_and_ranges():
    from narformer_tvm.cli.options import SeedList

    parse = lambda text: SeedList().convert(text, None, None)  # noqa: E731
    assert parse("3") == [0, 1, 2] and parse("1,3") == [1, 3] and parse("3-4") == [3, 4]
    assert parse("1-2,2-3") == [1, 2, 3] and parse("4, 0") == [4, 0]


def test_progress_in_a_log_file_prints_plain_lines(capsys):
    from narformer_tvm.cli.ui import progress_bar

    with progress_bar(log_every_s=3600) as bar:  # capsys: stderr is not a terminal, as in `cmd 2> log`
        task = bar.add_task("training", total=3, status="")
        for epoch in (1, 2, 3):
            bar.update(task, completed=epoch, status=f"epoch {epoch} val tau 0.5")
    lines = capsys.readouterr().err.splitlines()
    # the first update, then nothing for an hour, but always the finish
    assert any(line.endswith("training 1/3 [0:00:00] epoch 1 val tau 0.5") for line in lines), lines
    assert not any("epoch 2" in line for line in lines), lines
    assert any("training 3/3" in line and line.endswith("epoch 3 val tau 0.5") for line in lines), lines


def test_progress_lines_in_a_log_file_say_the_time_left(capsys):
    import re
    import time

    from narformer_tvm.cli.ui import progress_bar

    with progress_bar(log_every_s=0) as bar:
        task = bar.add_task("main pass", total=10, status="")
        for done in (1, 2, 3):
            time.sleep(0.05)
            bar.update(task, completed=done, status="")
    lines = capsys.readouterr().err.splitlines()
    assert any(re.search(r"main pass 3/10 \[0:00:00 eta 0:00:0\d\]", line) for line in lines), lines


def test_profiles_list_names_every_shipped_profile_and_the_default(capsys):
    import json as _json

    from narformer_tvm.profiles import DEFAULT_PROFILES, default_profile

    with pytest.raises(SystemExit) as exc:
        main(["profiles", "list", "--json"])
    assert exc.value.code == 0
    rows = {r["name"]: r for r in _json.loads(capsys.readouterr().out)}
    assert set(DEFAULT_PROFILES) <= set(rows) and rows[default_profile()]["default"]
    assert all(0 < rows[n]["held_out"]["mape"] < 0.1 and rows[n]["published"]["n"] == 18 for n in DEFAULT_PROFILES)


def test_profiles_rescore_refuses_an_unknown_profile(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["profiles", "rescore", "no-such-profile"])
    assert exc.value.code == 2 and "profiles list" in capsys.readouterr().err
