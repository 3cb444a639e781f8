"""Dataset folders: grown by adding shard files, read back through a rebuildable cache."""
import shutil
from pathlib import Path

import onnx
import pytest
from conftest import conv_model

from narformer_tvm.data.shards import CACHE_NAME, ROWS_SUFFIX, read_rows
from narformer_tvm.data.store import Store
from narformer_tvm.errors import InputError
from narformer_tvm.graph.onnx_graph import build_graph
from narformer_tvm.graph.tokens import table
from narformer_tvm.measure.backends import Measurement

SAMPLE_DB = Path(__file__).parent / "data" / "cpu-sample.db"
CONFIG = ({"runtime": "onnxruntime", "target": "llvm", "threads": 2}, {"cpu": "unit"})


def _measure(store: Store, tmp_path: Path, names, latency=1.0, kernels=None) -> None:
    for name in names:
        p = tmp_path / f"{name}.onnx"
        if not p.exists():
            onnx.save(conv_model(dims=(1, 3, 8 + 8 * len(name), 8)), p)
        g = build_graph(p)
        mid = store.add_model(name, name, table(g), {"macs": g.macs, "batch_size": 1}, family="conv")
        store.add_measurement(mid, store.config_id(*CONFIG), Measurement(blocks=[[latency, latency * 1.1]],
                                                                          kernels=kernels or []))


def _shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("*" + ROWS_SUFFIX))


def _latencies(folder: Path) -> dict:
    with Store(folder, readonly=True) as s:
        return {r["key"]: r["latency_ms"] for r in s.rows()}


def test_each_writing_run_adds_one_shard_of_its_own_rows(tmp_path):
    folder = tmp_path / "data"
    with Store(folder) as s:
        _measure(s, tmp_path, ["a", "bb", "ccc"])
    (first,) = _shards(folder)
    with Store(folder) as s:
        _measure(s, tmp_path, ["dddd"])
    second = [p for p in _shards(folder) if p != first]
    assert len(second) == 1
    kinds = [r["t"] for r in read_rows(second[0])]
    assert kinds.count("measurement") == 1 and kinds.count("model") == 1  # only the new row, self-contained
    assert second[0].stat().st_size < first.stat().st_size
    with Store(folder, readonly=True) as s:  # reading writes nothing
        pass
    assert len(_shards(folder)) == 2


def test_a_fresh_checkout_rebuilds_the_same_dataset_from_the_shards(tmp_path):
    folder = tmp_path / "data"
    with Store(folder) as s:
        _measure(s, tmp_path, ["a", "bb"], kernels=[{"name": "n0", "op": "Conv", "mean_us": 3.0, "runs": 5}])
        s.add_reference(s.config_id(*CONFIG), 0.5, 0.01)
    want = _latencies(folder)
    with Store(folder, readonly=True) as s:
        want_kernels = s.db.execute("SELECT name, op, mean_us, runs FROM kernels").fetchall()
    clone = tmp_path / "clone"
    clone.mkdir()
    for p in _shards(folder):
        shutil.copy(p, clone)
    assert not (clone / CACHE_NAME).exists()
    assert _latencies(clone) == want and len(want) == 2
    with Store(clone, readonly=True) as s:
        assert s.db.execute("SELECT name, op, mean_us, runs FROM kernels").fetchall() == want_kernels
        assert s.db.execute("SELECT COUNT(*) FROM reference").fetchone()[0] == 1


def test_rows_of_an_interrupted_run_are_written_by_the_next_one(tmp_path):
    folder = tmp_path / "data"
    s = Store(folder)
    _measure(s, tmp_path, ["a", "bb"])
    s.db.close()  # killed before closing: the rows are in the cache only
    assert not _shards(folder)
    with Store(folder) as s:
        _measure(s, tmp_path, ["ccc"])
    (shard,) = _shards(folder)
    assert [r["t"] for r in read_rows(shard)].count("measurement") == 3


def test_later_shards_replace_remeasured_rows_and_flags(tmp_path):
    folder = tmp_path / "data"
    with Store(folder) as s:
        _measure(s, tmp_path, ["a", "bb"], latency=1.0)
    with Store(folder) as s:
        _measure(s, tmp_path, ["a"], latency=2.0)  # measured again
        (mid,) = [r["model_id"] for r in s.rows() if r["key"] == "bb"]
        (meas,) = s.db.execute("SELECT id FROM measurements WHERE model_id=?", (mid,)).fetchone()
        s.flag_noisy([meas])
    (folder / CACHE_NAME).unlink()
    with Store(folder, readonly=True) as s:
        rows = {r["key"]: r for r in s.rows()}
    assert rows["a"]["latency_ms"] == pytest.approx(2.1) and rows["bb"]["noisy"]  # median of [2.0, 2.2]


def test_an_sqlite_shard_is_read_beside_row_shards(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(SAMPLE_DB, folder / "base.db")
    with Store(SAMPLE_DB, readonly=True) as s:
        base = len(s.rows())
    with Store(folder) as s:
        assert len(s.rows()) == base
        _measure(s, tmp_path, ["a"])
    (shard,) = _shards(folder)
    assert [r["t"] for r in read_rows(shard)].count("measurement") == 1  # the base rows are not written again
    assert len(_latencies(folder)) == base + 1


def test_a_removed_shard_leaves_the_dataset(tmp_path):
    folder = tmp_path / "data"
    with Store(folder) as s:
        _measure(s, tmp_path, ["a"])
    with Store(folder) as s:
        _measure(s, tmp_path, ["bb"])
    assert set(_latencies(folder)) == {"a", "bb"}
    _shards(folder)[-1].unlink()  # another branch checked out, say
    assert set(_latencies(folder)) == {"a"}


def test_a_damaged_shard_is_named(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / ("20260101T000000-x-1" + ROWS_SUFFIX)).write_bytes(b"not gzip")
    with pytest.raises(InputError, match="not a readable dataset shard"):
        Store(folder, readonly=True)


def _open_and_count(folder, queue):
    with Store(folder, readonly=True) as s:
        queue.put(len(s.rows()))


def test_a_process_opening_a_folder_waits_while_another_builds_its_cache(tmp_path):
    """Two trainings started together on a folder with no cache yet imported the same rows twice."""
    import multiprocessing

    from narformer_tvm.data.shards import cache_lock, cache_path

    folder = tmp_path / "ds"
    with Store(folder) as s:
        _measure(s, tmp_path, ["a", "b"])
    (folder / CACHE_NAME).unlink()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    with cache_lock(cache_path(folder)):  # this process is "building the cache"
        reader = ctx.Process(target=_open_and_count, args=(folder, queue))
        reader.start()
        reader.join(10)  # without the lock it opens the folder and exits well within this
        assert reader.is_alive() and queue.empty()
    reader.join(60)
    assert reader.exitcode == 0 and queue.get(timeout=5) == 2
