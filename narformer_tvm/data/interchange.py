"""Datasets: the SQLite store of graphs and measured latencies, and batching of encoded graphs
(many graphs of different sizes in one padded, masked batch)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from narformer_tvm.data.store import Store
from narformer_tvm.errors import InputError


def dataset_summary(store: Store) -> list[dict]:
    out = []
    for cfg in store.configs():
        fams = []
        q = ("SELECT COALESCE(d.family, 'user'), m.latency_ms, m.noisy FROM measurements m "
             "JOIN models d ON d.id = m.model_id WHERE m.config_id=? AND m.pass='main'")
        by_family: dict[str, list] = {}
        for fam, lat, noisy in store.db.execute(q, (cfg["id"],)):
            by_family.setdefault(fam, []).append((lat, noisy))
        for fam, rows in sorted(by_family.items()):
            lats = [r[0] for r in rows if r[0] is not None]
            fams.append({"family": fam, "measured": len(lats), "failed": len(rows) - len(lats),
                         "noisy": sum(r[1] for r in rows),
                         "median_ms": float(np.median(lats)) if lats else None,
                         "min_ms": min(lats) if lats else None, "max_ms": max(lats) if lats else None})
        out.append({**cfg, "families": fams})
    return out


EXPORT_COLUMNS = ("key", "name", "family", "batch_size", "nodes", "macs", "flops", "params", "memory", "latency_ms",
                  "spread", "contention", "noisy", "error", "pass", "platform", "config", "measured_at")


def _export_rows(store: Store) -> list[tuple]:
    q = ("SELECT d.key, d.name, d.family, d.batch_size, d.nodes, d.macs, d.flops, d.params, d.memory, m.latency_ms,"
         " m.spread, m.contention, m.noisy, m.error, m.pass, c.platform, c.config, m.measured_at FROM measurements m"
         " JOIN models d ON d.id = m.model_id JOIN configs c ON c.id = m.config_id ORDER BY m.id")
    return list(store.db.execute(q))


def export_csv(store: Store, out: str | Path) -> int:
    import csv

    rows = _export_rows(store)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(EXPORT_COLUMNS)
        w.writerows(rows)
    return len(rows)


def export_parquet(store: Store, out: str | Path) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("Parquet export needs pyarrow", hint="pip install pyarrow, or use --format csv") from None
    rows = _export_rows(store)
    cols = {c: [r[i] for r in rows] for i, c in enumerate(EXPORT_COLUMNS)}
    pq.write_table(pa.table(cols), out)
    return len(rows)


def export_nnlqp(store: Store, out: str | Path, write_onnx: str | Path | None = None) -> int:
    """NNLQP's gt.txt: ``GraphID OnnxPath BatchSize Latency(ms) ModelType PlatformId [train/test]``."""
    out = Path(out)
    q = ("SELECT d.id, d.name, d.family, d.onnx_path, d.source, d.batch_size, m.latency_ms, c.platform, d.split"
         " FROM measurements m JOIN models d ON d.id = m.model_id JOIN configs c ON c.id = m.config_id"
         " WHERE m.pass='main' AND m.latency_ms IS NOT NULL ORDER BY m.id")
    n = 0
    with open(out, "w") as f:
        for mid, name, fam, path, source, batch, lat, platform, split in store.db.execute(q):
            if not path:
                path = f"zoo/{name}.onnx"
                if write_onnx:
                    from narformer_tvm.measure.zoo import Variant

                    dst = Path(write_onnx) / f"{name}.onnx"
                    if not dst.exists():
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        Variant(**json.loads(source)).export(dst)
                    path = str(dst)
            f.write(f"{mid} {path} {batch} {lat:.6f} {fam or 'user'} {platform}" + (f" {split}" if split else "") + "\n")
            n += 1
    return n


def import_nnlqp(store: Store, gt: str | Path, onnx_root: str | Path | None = None) -> tuple[int, list]:
    """Read a gt.txt; each line's ONNX file is analysed so the dataset can train without it later."""
    from narformer_tvm.errors import NarformerError
    from narformer_tvm.graph.onnx_graph import build_graph
    from narformer_tvm.graph.tokens import table

    gt = Path(gt)
    if not gt.is_file():
        raise InputError(f"{gt}: no such file")
    root = Path(onnx_root) if onnx_root else gt.parent
    n, errors = 0, []
    for lineno, line in enumerate(gt.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or line.startswith("#"):
            continue
        if len(parts) < 6:
            errors.append((lineno, f"expected 6 or 7 fields, got {len(parts)}"))
            continue
        gid, rel, batch, lat, family, platform = parts[:6]
        split = parts[6] if len(parts) > 6 else None
        path = Path(rel) if Path(rel).is_absolute() else root / rel
        try:
            batch_i, lat_f = int(batch), float(lat)
            g = build_graph(path, batch_size=batch_i, name=Path(rel).stem)
        except (ValueError, NarformerError) as e:
            errors.append((lineno, str(e).splitlines()[0]))
            continue
        from narformer_tvm.data.store import file_key
        from narformer_tvm.measure.backends import Measurement

        key = file_key(path, None, batch_i)
        model_id = store.add_model(key, f"{family}-{gid}", table(g),
                                   {"macs": g.macs, "flops": g.flops, "params": g.params, "memory": g.memory,
                                    "batch_size": g.batch_size}, family=family, source={"path": str(path), "gt": str(gt)},
                                   onnx_path=str(path), split=split)
        config_id = store.config_id({"runtime": "imported", "target": platform, "threads": 0}, {"platform": platform})
        store.add_measurement(model_id, config_id, Measurement(blocks=[[lat_f]], info={"imported_from": str(gt)}))
        n += 1
    return n, errors
