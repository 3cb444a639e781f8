import csv
import sqlite3
from pathlib import Path

import onnx
import pytest
from conftest import conv_model

from narformer_tvm.data.blocks import pack_blocks, unpack_blocks
from narformer_tvm.data.interchange import export_csv, export_nnlqp, import_nnlqp
from narformer_tvm.data.labels import regime_factor
from narformer_tvm.data.store import Store, merge
from narformer_tvm.errors import InputError
from narformer_tvm.fileio import write_atomically
from narformer_tvm.graph.onnx_graph import build_graph
from narformer_tvm.graph.tokens import GraphTable, table
from narformer_tvm.measure.backends import Measurement


def test_blocks_round_trip():
    blocks = [[1.5, 2.25], [3.0], [4.0, 5.0, 6.5]]
    assert unpack_blocks(pack_blocks(blocks)) == blocks


def _fill(store: Store, tmp_path, n=3, platform="cpu-a") -> list:
    paths = []
    for i in range(n):
        p = tmp_path / f"{platform}-{i}.onnx"
        onnx.save(conv_model(dims=(1, 3, 8 + 8 * i, 8)), p)
        g = build_graph(p)
        mid = store.add_model(f"{platform}-{i}", p.stem, table(g), {"macs": g.macs, "batch_size": 1}, family="conv",
                              onnx_path=str(p))
        cid = store.config_id({"runtime": "onnxruntime", "target": "llvm", "threads": 2}, {"cpu": platform})
        store.add_measurement(mid, cid, Measurement(blocks=[[1.0 + i, 2.0], [1.5 + i]]))
        paths.append(p)
    return paths


def test_store_schema_is_versioned_and_bad_files_are_refused(tmp_path):
    Store(tmp_path / "a.db").close()
    db = sqlite3.connect(tmp_path / "a.db")
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    with pytest.raises(InputError, match="schema v99"):
        Store(tmp_path / "a.db")
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InputError, match="not a narformer-tvm dataset"):
        Store(tmp_path / "junk.db")
    with pytest.raises(InputError, match="no such dataset"):
        Store(tmp_path / "missing.db", create=False)


def test_a_fingerprint_that_gained_fields_keeps_its_configuration(tmp_path):
    store = Store(tmp_path / "d.db")
    ident = {"runtime": "onnxruntime", "target": "llvm", "threads": 2}
    old = store.config_id(ident, {"cpu": "AMD EPYC", "physical_cores": 2})
    newer = {"cpu": "AMD EPYC", "physical_cores": 2, "cpu_id": "AuthenticAMD family 26 model 2"}
    assert store.config_id(ident, newer) == old  # same machine, fingerprint recorded by an older version
    assert store.configs()[0]["fingerprint"] == newer
    assert store.config_id(ident, {**newer, "cpu_id": "AuthenticAMD family 25 model 17"}) != old  # other CPU
    assert store.config_id({**ident, "threads": 1}, newer) != old
    assert len(store.configs()) == 3


def test_rows_decode_to_graph_tables(tmp_path):
    store = Store(tmp_path / "d.db")
    _fill(store, tmp_path)
    rows = store.rows()
    assert [r["latency_ms"] for r in rows] == [1.5, 2.0, 2.5]  # min of block medians
    t = GraphTable.from_bytes(rows[0]["graph"])
    assert t.ops == ["Conv", "Relu"]


def test_nnlqp_export_import_round_trip(tmp_path):
    src = Store(tmp_path / "src.db")
    _fill(src, tmp_path)
    gt = tmp_path / "gt.txt"
    assert export_nnlqp(src, gt) == 3
    lines = gt.read_text().splitlines()
    assert len(lines[0].split()) == 6 and lines[0].split()[2] == "1" and lines[0].split()[4] == "conv"
    gt.write_text("\n".join(l + (" train" if i < 2 else " test") for i, l in enumerate(lines)) + "\n")
    dst = Store(tmp_path / "dst.db")
    n, errors = import_nnlqp(dst, gt)
    assert (n, errors) == (3, [])
    a = [(r["latency_ms"], GraphTable.from_bytes(r["graph"]).ops) for r in src.rows()]
    b = [(r["latency_ms"], GraphTable.from_bytes(r["graph"]).ops) for r in dst.rows()]
    assert [x[1] for x in a] == [x[1] for x in b]
    assert [round(x[0], 5) for x in a] == [round(x[0], 5) for x in b]
    assert [r["split"] for r in dst.rows()] == ["train", "train", "test"]
    (tmp_path / "bad.txt").write_text("1 missing.onnx 1 2.0 conv cpu\n1 2 3\n")
    n, errors = import_nnlqp(dst, tmp_path / "bad.txt")
    assert n == 0 and [e[0] for e in errors] == [1, 2]


def test_csv_export_and_merge(tmp_path):
    a, b = Store(tmp_path / "a.db"), Store(tmp_path / "b.db")
    _fill(a, tmp_path, 2, "cpu-a")
    _fill(b, tmp_path, 3, "cpu-b")
    merged = Store(tmp_path / "m.db")
    assert merge(merged, a) == 2 and merge(merged, b) == 3 and merge(merged, a) == 0
    assert len(merged.configs()) == 2 and len(merged.rows()) == 5
    assert export_csv(merged, tmp_path / "m.csv") == 5
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert {r["family"] for r in rows} == {"conv"} and float(rows[0]["latency_ms"]) == 1.5


def test_dataset_stays_small(tmp_path, exported):
    """20,000 typical graphs must fit well under 100 MB."""
    store = Store(tmp_path / "size.db")
    g = build_graph(exported("resnet50"))  # 122 layers: zoo graphs average about 100
    t = table(g)
    for i in range(200):
        mid = store.add_model(f"k{i}", "e", t, {"macs": g.macs})
        cid = store.config_id({"runtime": "onnxruntime", "target": "llvm", "threads": 2}, {"cpu": "x"})
        store.add_measurement(mid, cid, Measurement(blocks=[[1.0] * 20] * 7))
    store.close()
    per_model = (tmp_path / "size.db").stat().st_size / 200
    assert per_model * 20_000 < 100e6


def test_regraph_updates_stale_graphs_and_fails_models_that_no_longer_extract(tmp_path):
    """After a fix to graph extraction, stored graphs are re-extracted; a model whose output turns out
    not to depend on its input gets failed measurements, as a fresh sweep would record."""
    from onnx import TensorProto, helper

    from narformer_tvm.cli.main import main
    from narformer_tvm.measure.regraph import regraph

    with Store(tmp_path / "d.db") as store:
        paths = _fill(store, tmp_path)
    onnx.save(conv_model(dims=(1, 3, 32, 8)), paths[0])  # stands for an old, different extraction
    z = helper.make_tensor("z", TensorProto.FLOAT, (1, 3, 8, 8), [1.0] * 192)
    w = helper.make_tensor("w", TensorProto.FLOAT, (4, 3, 3, 3), [0.1] * 108)
    const = helper.make_graph([helper.make_node("Conv", ["z", "w"], ["c"], pads=[1, 1, 1, 1]),
                               helper.make_node("Relu", ["c"], ["y"])], "const",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [z, w])
    onnx.save(helper.make_model(const, opset_imports=[helper.make_opsetid("", 17)]), paths[1])
    onnx.save(conv_model(dims=(1, 3, "h", 8)), paths[2])  # profiled with an --input-shape that is not stored
    with Store(tmp_path / "d.db") as store:
        counts = regraph(store)
        assert (counts["checked"], counts["changed"], counts["failed"], counts["missing"]) == (2, 1, 1, 1)
        rows = {r["name"]: r for r in store.rows(ok_only=False)}
        assert rows[paths[1].stem]["latency_ms"] is None and "does not depend" in rows[paths[1].stem]["error"]
        assert GraphTable.from_bytes(rows[paths[0].stem]["graph"]).scalars[0][2] == 32  # the new input height
        assert [r["name"] for r in store.rows()] == [paths[0].stem, paths[2].stem]  # the third left as it was
    with pytest.raises(SystemExit) as exc:  # a second pass finds nothing left to change
        main(["dataset", "regraph", str(tmp_path / "d.db")])
    assert exc.value.code == 0
    with Store(tmp_path / "d.db") as store:
        assert regraph(store)["changed"] == 0


def test_write_atomically_keeps_the_old_file_when_a_write_fails(tmp_path):
    path = tmp_path / "rows.json"
    write_atomically(path, lambda tmp: tmp.write_text("first"))
    assert path.read_text() == "first"

    def interrupted(tmp):
        tmp.write_text("half a fi")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, interrupted)
    assert path.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["rows.json"]
    write_atomically(path, lambda tmp: tmp.write_text("second"))
    assert path.read_text() == "second" and [p.name for p in tmp_path.iterdir()] == ["rows.json"]


def test_regime_factor_by_hand():
    assert regime_factor(None, 0.2) == regime_factor({}, 0.2) == regime_factor({"probe_ms": [0.3, 0.4]}, None) == 1.0
    assert regime_factor({"probe_ms": [0.25, 0.22], "probe_fast_ms": 0.21}, 0.2) == pytest.approx(1.1 ** 0.5)
    assert regime_factor({"probe_ms": [0.18, 0.25]}, 0.2) == pytest.approx(0.9 ** 0.5)  # quicker than typical


def test_sitting_factor_by_hand():
    from narformer_tvm.data.labels import sitting_factor

    assert sitting_factor(None, 0.2, 0.21) == sitting_factor({"probe_ms": [0.2]}, None, 0.21) == 1.0
    assert sitting_factor({"probe_ms": [0.2]}, 0.2, None) == 1.0  # no clean probe in its sitting
    # a sitting 5% quicker than typical in full, the row 10% slower than its sitting to the square root
    assert sitting_factor({"probe_ms": [0.231, 0.3]}, 0.22, 0.21) == pytest.approx(0.21 / 0.22 * 1.1 ** 0.5)


def test_repeat_rounds_name_their_passes():
    from narformer_tvm.data.labels import is_pass_name, repeat_pass_name

    assert [repeat_pass_name(n) for n in (1, 2, 10)] == ["repeat", "repeat2", "repeat10"]
    assert all(map(is_pass_name, ("main", "repeat", "repeat2", "repeat10")))
    assert not any(map(is_pass_name, ("repeat1", "repeat0", "repeatx", "Main", "")))
    with pytest.raises(ValueError):
        repeat_pass_name(0)


def test_sittings_split_on_pauses_and_compare_probes_with_the_typical_level(tmp_path, capsys):
    import json
    import shutil

    from narformer_tvm.cli.main import main
    from narformer_tvm.data.labels import sittings

    db = tmp_path / "d.db"
    shutil.copy(Path(__file__).parent / "data" / "cpu-sample.db", db)
    con = sqlite3.connect(db)
    ids = [i for (i,) in con.execute("SELECT id FROM measurements ORDER BY id")]
    # 4 rows a minute apart, a 30-minute pause, then the rest a minute apart; the second sitting's
    # probes run 10% quicker than the first's (the typical level: the median over all clean rows)
    for n, i in enumerate(ids):
        minute = n if n < 4 else n + 30
        probe = 0.2 if n < 4 else 0.18
        con.execute("UPDATE measurements SET measured_at=?, noisy=0, info=? WHERE id=?",
                    (f"2026-11-30T{4 + minute // 60:02d}:{minute % 60:02d}:00", json.dumps({"probe_ms": [probe, 0.3]}), i))
    con.commit()
    con.close()
    with Store(db, readonly=True) as store:
        found = sittings(store)
    assert [s["rows"] for s in found] == [4, len(ids) - 4]
    assert (found[0]["start"], found[0]["end"]) == ("2026-11-30T04:00:00", "2026-11-30T04:03:00")
    assert found[1]["start"] == "2026-11-30T04:34:00"
    assert found[0]["probe_vs_typical"] == pytest.approx(0.2 / 0.18 - 1) and found[1]["probe_vs_typical"] == 0
    with Store(db, readonly=True) as store:  # the first sitting's level is taken out in full by the sitting factor
        rows = {r["measured_at"]: r for r in store.rows(ok_only=False)}
    first = rows["2026-11-30T04:00:00"]
    assert first["sitting_factor"] == pytest.approx(0.2 / 0.18)
    assert first["regime_factor"] == pytest.approx((0.2 / 0.18) ** 0.5)
    assert rows["2026-11-30T04:34:00"]["sitting_factor"] == pytest.approx(1.0)
    with pytest.raises(SystemExit) as exc:
        main(["dataset", "sittings", str(db)])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "2026-11-30T04:34:00" in out and "+11.1%" in out


def test_a_gpu_configuration_is_named_by_its_gpu(tmp_path):
    store = Store(tmp_path / "p.db")
    cpu = store.config_id({"runtime": "onnxruntime", "target": "llvm", "threads": 2}, {"cpu": "AMD EPYC 9B45"})
    gpu = store.config_id({"runtime": "tvm", "target": "cuda", "threads": 16}, {"cpu": "Intel Xeon", "gpu": "NVIDIA H200"})
    names = dict(store.db.execute("SELECT id, platform FROM configs").fetchall())
    assert names == {cpu: "onnxruntime-llvm-2t-AMD_EPYC_9B45", gpu: "tvm-cuda-NVIDIA_H200"}
