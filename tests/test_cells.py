import json
from pathlib import Path

import numpy as np
import pytest

from narformer_tvm.errors import InputError
from narformer_tvm.graph.cells import (
    CELL_OPS,
    Cell,
    cell_features,
    encode_cell,
    load_nb101,
    load_nb201,
    nb101_cell,
    nb201_cell,
    nb201_input_reaches_output,
    parse_nb201,
    permuted,
)
from narformer_tvm.learn.metrics import kendall_tau
from narformer_tvm.learn.nas import (
    AccuracyOptions,
    held_out,
    new_cell_model,
    predict_cells,
    protocol_split,
    train_accuracy,
)
from narformer_tvm.model.narformer import ModelConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_parse_nb201():
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    assert parse_nb201(arch) == [("nor_conv_3x3", 0, 1), ("nor_conv_3x3", 0, 2), ("avg_pool_3x3", 1, 2),
                                 ("skip_connect", 0, 3), ("nor_conv_3x3", 1, 3), ("skip_connect", 2, 3)]
    for bad in ["|conv~0|+|a~0|b~1|+|c~0|d~1|e~2|", "|none~0|", "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|"]:
        with pytest.raises(ValueError):
            parse_nb201(bad)


def test_cells_whose_none_edges_cut_the_input_off(tmp_path):
    from narformer_tvm.errors import ModelLoadError
    from narformer_tvm.graph.onnx_graph import build_graph
    from narformer_tvm.measure import families

    cut = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"
    assert nb201_input_reaches_output(cut) is False
    assert nb201_input_reaches_output("|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|skip_connect~2|") is True
    assert nb201_input_reaches_output("|none~0|+|none~0|none~1|+|none~0|nor_conv_1x1~1|nor_conv_3x3~2|") is False
    # the network around a cut-off cell computes a constant: no operator is left to run
    families.export_onnx(families.build("nb201", arch=cut, c=8, n_cells=1), tmp_path / "cut.onnx", 32)
    with pytest.raises(ModelLoadError, match="does not depend on any input"):
        build_graph(tmp_path / "cut.onnx")


def test_nb201_graph_by_hand():
    # node1 = conv3(in); node2 = conv1(in) + pool(node1); node3 = skip(node2) (other edges none)
    cell = nb201_cell("|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|none~1|skip_connect~2|")
    assert cell.ops == ["input", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect", "output"]
    assert cell.edges == [(0, 1), (0, 2), (1, 3), (2, 4), (3, 4), (4, 5)]
    full = nb201_cell("|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|none~1|skip_connect~2|",
                      prune_none=False)
    assert full.n == 8 and full.ops.count("none") == 2


def test_isomorphic_cells_give_the_same_graph_up_to_node_order():
    # node 1 and node 2 swap roles: same function, different labelling
    a = nb201_cell("|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|skip_connect~1|skip_connect~2|")
    b = nb201_cell("|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|none~0|skip_connect~1|skip_connect~2|")
    assert sorted(a.ops) == sorted(b.ops)

    def canon(c: Cell):
        return sorted((c.ops[s], c.ops[d]) for s, d in c.edges)

    assert canon(a) == canon(b)


def test_permutation_preserves_the_cell():
    cell = nb201_cell("|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
    p = permuted(cell, np.random.default_rng(0))
    assert p.ops[0] == "input" and p.ops[-1] == "output" and sorted(p.ops) == sorted(cell.ops)
    labelled = lambda c: sorted((c.ops[s], c.ops[d]) for s, d in c.edges)  # noqa: E731
    assert labelled(p) == labelled(cell) and len(p.edges) == len(cell.edges)


def test_nb101_cell_drops_padding():
    ops = [-1, 0, -3, 2, -2]
    adj = [[0, 1, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    cell = nb101_cell(ops, adj)
    assert cell.ops == ["input", "conv3x3-bn-relu", "maxpool3x3", "output"]
    assert cell.edges == [(0, 1), (0, 2), (1, 3), (2, 3)]


def test_encoding_width():
    enc = encode_cell(nb101_cell([-1, 1, -2], [[0, 1, 0], [0, 0, 1], [0, 0, 0]]), n_freqs=4)
    assert enc.x.shape == (3, len(CELL_OPS) + 8) and enc.x[1, CELL_OPS.index("conv1x1-bn-relu")] == 1


def test_held_out_cells_are_neither_trained_on_nor_validated():
    tr, va = protocol_split(1000, 424, 50, seed=3)
    rest = held_out(1000, tr, va)
    assert len(rest) == 526 and not set(rest) & (set(tr) | set(va))
    assert sorted(set(rest) | set(tr) | set(va)) == list(range(1000))


@pytest.mark.skipif(not (SHARED / "nasbench201_accuracy.csv").exists(), reason="shared NAS data not present")
def test_benchmarks_load_and_a_short_run_beats_random():
    nb201 = load_nb201(SHARED / "nasbench201_accuracy.csv")
    assert len(nb201.cells) == 15625 and 0 < nb201.accuracy.max() <= 1
    nb101 = load_nb101(SHARED / "nasbench101_1k.json")
    assert len(nb101.cells) == 1000 and all(c.ops[0] == "input" and c.ops[-1] == "output" for c in nb101.cells)
    tr, va = protocol_split(len(nb201.cells), 200, 100, seed=0)
    opts = AccuracyOptions(d_model=32, n_layers=2, n_groups=4, epochs=30, lr=1e-3, patience=30)
    model, history = train_accuracy([nb201.cells[i] for i in tr], nb201.accuracy[tr], [nb201.cells[i] for i in va],
                                    nb201.accuracy[va], opts)
    held = np.random.default_rng(1).choice(np.setdiff1d(np.arange(len(nb201.cells)), tr), 1000, replace=False)
    tau = kendall_tau(predict_cells(model, [nb201.cells[i] for i in held]), nb201.accuracy[held])
    assert tau > 0.3, tau  # a random ranking gives about 0


def test_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_nb201(tmp_path / "nope.csv")


@pytest.mark.skipif(not (SHARED / "nasbench101_1k.json").exists(), reason="shared NAS data not present")
def test_accuracy_cli_train_and_evaluate(tmp_path, capsys):
    from narformer_tvm.cli.main import main
    from narformer_tvm.learn.nas import load_cell_predictor

    small = ["--benchmark", "nb101", "--data", str(SHARED / "nasbench101_1k.json"), "--train-size", "100",
             "--d-model", "16", "--layers", "2", "--groups", "2", "--epochs", "3"]
    with pytest.raises(SystemExit) as exc:
        main(["train", "--task", "accuracy", *small, "--precision", "fp32", "--ema", "0.99", "--layer-fusion",
              "--block", "prenorm", "--loss-form", "reference", "--rank-weight", "0.1", "--consistency-weight", "0.5",
              "--dropout", "0.05", "--n-freqs", "8", "--gffn-norm", "--enhance-first", "--no-readout-norm",
              "--head", "gelu", "--out", str(tmp_path / "c.pt")])
    assert exc.value.code == 0 and "Kendall tau" in capsys.readouterr().out
    model, opts, state = load_cell_predictor(tmp_path / "c.pt")
    assert state["benchmark"] == "nb101" and opts.n_layers == 2 and opts.epochs == 3 and opts.precision == "fp32"
    assert opts.ema == 0.99 and opts.fusion and model.cfg.layer_fusion
    assert opts.block == model.cfg.block == "prenorm" and model.cfg.layer_scale == ModelConfig.layer_scale
    assert (opts.loss_form, opts.rank_weight, opts.consistency_weight) == ("reference", 0.1, 0.5)
    assert opts.dropout == model.cfg.dropout == 0.05 and model.blocks[0].drop.p == 0.05
    assert opts.gffn_norm and model.blocks[0].ffn.fc1.norm is not None and opts.enhance_first
    assert model.cfg.enhance_first and model.blocks[0].enhance_first and not opts.readout_norm
    assert not model.cfg.readout_norm and opts.head == model.cfg.head == "gelu" and len(model.head) == 3
    assert len(new_cell_model(AccuracyOptions(d_model=16, n_layers=1, n_groups=2)).head) == 7  # the default: reference
    assert opts.n_freqs == 8 and model.cfg.n_features == cell_features(8) != cell_features()
    assert len(state["calibration"]["pred"]) == len(state["calibration"]["accuracy"]) == 101
    # options not given keep the cell task's defaults, not the latency task's
    assert (opts.lr, opts.patience) == (AccuracyOptions().lr, AccuracyOptions().patience) != (1e-3, 15)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--task", "accuracy", *small, "--seeds", "1", "--out", str(tmp_path / "rep")])
    assert exc.value.code == 0 and "| gnn |" in (tmp_path / "rep" / "report.md").read_text()
    read = lambda m: json.loads((tmp_path / "rep" / f"{m}.json").read_text())["rows"]  # noqa: E731
    first = {m: read(m) for m in ("narformer", "gnn")}
    assert json.loads((tmp_path / "rep" / "narformer.json").read_text())["run"]["options"]["block"] == "l2"  # default
    assert all(-1 <= first[m][0]["kendall_tau_held_out"] <= 1 for m in first)
    with pytest.raises(SystemExit) as exc:  # seed 1 alone (as a second process would): seed 0 is kept
        main(["evaluate", "--task", "accuracy", *small, "--seeds", "1-1", "--out", str(tmp_path / "rep")])
    assert exc.value.code == 0 and [r["seed"] for r in read("narformer")] == [0, 1]
    assert read("narformer")[0] == first["narformer"][0] and read("gnn")[0] == first["gnn"][0]
    assert "(1 seed: 1)" in (tmp_path / "rep" / "report.md").read_text()
    both = {m: read(m) for m in ("narformer", "gnn")}
    with pytest.raises(SystemExit) as exc:  # both seeds finished: the report of both, nothing retrained
        main(["evaluate", "--task", "accuracy", *small, "--seeds", "2", "--out", str(tmp_path / "rep")])
    assert exc.value.code == 0 and all(read(m) == both[m] for m in both)
    assert "(2 seeds)" in (tmp_path / "rep" / "report.md").read_text()
    # another setting in the same folder starts afresh instead of mixing rows
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--task", "accuracy", *small[:-1], "4", "--seeds", "1", "--methods", "gnn",
              "--out", str(tmp_path / "rep")])
    assert exc.value.code == 0 and len(read("gnn")) == 1 and read("gnn")[0]["epochs_run"] == 4
    with pytest.raises(SystemExit) as exc:
        main(["train", "--task", "accuracy", "--out", str(tmp_path / "x.pt")])
    assert exc.value.code == 2
