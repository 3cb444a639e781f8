"""The dataset store: graphs, configurations and measurements in SQLite, written transactionally; a single
``.db`` file, or a dataset folder of shards that only ever grows by new files (data.shards)."""
from __future__ import annotations

import bisect
import hashlib
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from narformer_tvm.data import shards
from narformer_tvm.data.blocks import pack_blocks
from narformer_tvm.data.labels import (
    regime_factor,
    sitting_factor,
    sittings,
)
from narformer_tvm.errors import InputError
from narformer_tvm.graph.tokens import FEATURE_VERSION, GraphTable

SCHEMA_VERSION = 1


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- one row per network: the compact graph (features.GraphTable) is enough to train without ONNX files
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY,
    key TEXT UNIQUE NOT NULL,          -- zoo variant key, or sha1 of the ONNX file
    name TEXT NOT NULL,
    family TEXT,                       -- zoo family, or NULL for user models
    source TEXT,                       -- JSON: zoo variant (family, seed, index, raw) or {"path": ...}
    onnx_path TEXT,                    -- where the ONNX file was (optional; zoo models are regenerated)
    graph BLOB NOT NULL,               -- features.GraphTable.to_bytes()
    graph_version INTEGER NOT NULL,    -- features.FEATURE_VERSION when the graph was extracted
    nodes INTEGER, macs INTEGER, flops INTEGER, params INTEGER, memory INTEGER, batch_size INTEGER,
    split TEXT                         -- optional fixed split tag (train/test) from imports
);
-- one row per measurement configuration (runtime, target, threads, ...) and machine fingerprint
CREATE TABLE IF NOT EXISTS configs (
    id INTEGER PRIMARY KEY,
    key TEXT UNIQUE NOT NULL,          -- JSON of identity + fingerprint
    config TEXT NOT NULL,              -- MeasureConfig.identity() JSON
    fingerprint TEXT NOT NULL,         -- backends.fingerprint() JSON
    platform TEXT NOT NULL             -- short name used by NNLQP exports (PlatformId)
);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY,
    model_id INTEGER NOT NULL REFERENCES models(id),
    config_id INTEGER NOT NULL REFERENCES configs(id),
    pass TEXT NOT NULL DEFAULT 'main', -- 'main', 'repeat' for the noise-floor pass, 'repeat2'... later rounds
    latency_ms REAL,                   -- label: min over blocks of block medians; NULL if failed
    samples BLOB,                      -- raw samples: float32 blocks, see pack_blocks
    statistic TEXT,
    spread REAL,                       -- block medians max/min - 1
    contention REAL,                   -- CPU share used by other processes while measuring
    noisy INTEGER NOT NULL DEFAULT 0,  -- spread or contention stayed above threshold after retries
    error TEXT,                        -- why the measurement failed
    info TEXT,                         -- JSON: runs per block, warm-up, provider, ...
    method_id INTEGER REFERENCES methods(id),  -- MeasureConfig (warm-up, blocks, runs) used
    measured_at TEXT NOT NULL,
    duration_s REAL,
    UNIQUE (model_id, config_id, pass)
);
CREATE TABLE IF NOT EXISTS methods (id INTEGER PRIMARY KEY, method TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS kernels (
    measurement_id INTEGER NOT NULL REFERENCES measurements(id),
    name TEXT NOT NULL, op TEXT, mean_us REAL, runs INTEGER
);
CREATE TABLE IF NOT EXISTS reference (
    id INTEGER PRIMARY KEY, config_id INTEGER NOT NULL, measured_at TEXT NOT NULL, latency_ms REAL, spread REAL
);
CREATE INDEX IF NOT EXISTS idx_meas_model ON measurements(model_id);
CREATE INDEX IF NOT EXISTS idx_kernels_meas ON kernels(measurement_id);
"""



class Store:
    """A dataset of graphs and measured latencies in one SQLite file, written transactionally."""

    def __init__(self, path: str | Path, create: bool = True, readonly: bool = False):
        import sqlite3

        self.path = Path(path)
        self.folder = self.path if shards.is_folder(self.path) else None
        self.readonly = readonly
        if (readonly or not create) and not (self.path.is_file() or self.path.is_dir()):
            raise InputError(f"{self.path}: no such dataset", hint="create one with `narformer-tvm profile --db PATH`")
        if self.folder is not None:
            self._open_folder()
            return
        try:
            if readonly:  # never touches the file (committed datasets, shared folders)
                self.db = sqlite3.connect(f"file:{self.path.resolve()}?mode=ro", uri=True, timeout=30)
                row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(self.path, timeout=30)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.executescript(SCHEMA)
                row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    with self.db:
                        self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                    row = (str(SCHEMA_VERSION),)
        except sqlite3.DatabaseError as e:
            raise InputError(f"{self.path}: not a narformer-tvm dataset ({e})",
                             hint="pass a .db file written by `narformer-tvm profile`") from None
        if row is None or int(row[0]) != SCHEMA_VERSION:
            raise InputError(f"{self.path}: dataset schema v{row[0] if row else '?'}, this narformer-tvm reads "
                             f"v{SCHEMA_VERSION}", hint="use the narformer-tvm release that wrote it, or re-profile")

    def _open_folder(self) -> None:
        """A dataset folder (data.shards): its cache, brought up to date with the shards."""
        self.folder.mkdir(parents=True, exist_ok=True)
        cache = shards.cache_path(self.folder)
        with shards.cache_lock(cache):
            self._open_cache(cache)

    def _open_cache(self, cache: Path) -> None:
        import sqlite3

        for attempt in range(2):
            self.db = sqlite3.connect(cache, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
            with self.db:
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            shards.track(self.db)
            try:
                shards.sync(self.db, self.folder, self._merge_shard)
                return
            except shards.StaleCache:
                if shards.has_changes(self.db):  # rows measured here and not yet written out: keep them
                    shards.flush(self.db, self.folder)
                self.db.close()
                for suffix in ("", "-wal", "-shm"):
                    Path(str(cache) + suffix).unlink(missing_ok=True)
        raise InputError(f"{self.folder}: its cache could not be rebuilt", hint=f"delete {cache} and retry")

    def _merge_shard(self, path: Path) -> None:
        with Store(path, readonly=True) as src:
            merge(self, src)

    def flush(self) -> Path | None:
        """In a dataset folder, write what changed since the last flush as a new shard."""
        if self.folder is None or self.readonly:
            return None
        return shards.flush(self.db, self.folder)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ----- writing --------------------------------------------------------------------------------

    def config_id(self, identity: dict, fingerprint: dict) -> int:
        key = json.dumps({"config": identity, "fingerprint": fingerprint}, sort_keys=True)
        row = self.db.execute("SELECT id FROM configs WHERE key=?", (key,)).fetchone()
        if row:
            return row[0]
        for cid, old in self.db.execute("SELECT id, fingerprint FROM configs WHERE config=?",
                                        (json.dumps(identity, sort_keys=True),)).fetchall():
            old = json.loads(old)
            if old and old.items() <= fingerprint.items():
                # Recorded before the fingerprint gained fields (e.g. cpu_id): the same machine, so resuming
                # the sweep must not measure everything again under a new configuration.
                with self.db:
                    self.db.execute("UPDATE configs SET key=?, fingerprint=? WHERE id=?",
                                    (key, json.dumps(fingerprint, sort_keys=True), cid))
                return cid
        # A GPU's latencies do not depend on the host's CPU or threads: name the GPU instead.
        device = fingerprint.get("gpu") or f"{identity['threads']}t-{fingerprint.get('cpu', '')}"
        platform = f"{identity['runtime']}-{identity['target']}-{device}"
        platform = "".join(c if c.isalnum() or c in "-_." else "_" for c in platform)[:80]
        with self.db:
            cur = self.db.execute("INSERT INTO configs (key, config, fingerprint, platform) VALUES (?,?,?,?)",
                                  (key, json.dumps(identity, sort_keys=True), json.dumps(fingerprint, sort_keys=True),
                                   platform))
        return cur.lastrowid

    def model_id(self, key: str) -> int | None:
        row = self.db.execute("SELECT id FROM models WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def add_model(self, key: str, name: str, table: GraphTable, stats: dict, family: str | None = None,
                  source: dict | None = None, onnx_path: str | None = None, split: str | None = None) -> int:
        existing = self.model_id(key)
        if existing is not None:
            return existing
        with self.db:
            cur = self.db.execute(
                "INSERT INTO models (key, name, family, source, onnx_path, graph, graph_version, nodes, macs, flops,"
                " params, memory, batch_size, split) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, name, family, json.dumps(source or {}, sort_keys=True, default=str), onnx_path,
                 table.to_bytes(), FEATURE_VERSION, len(table.ops), stats.get("macs"), stats.get("flops"),
                 stats.get("params"), stats.get("memory"), stats.get("batch_size"), split))
        return cur.lastrowid

    def replace_graph(self, model_id: int, table: GraphTable | None, stats: dict, error: str | None = None) -> None:
        """Store a re-extracted graph. ``table=None``: the graph no longer extracts (``error`` says why);
        the model's measurements become failures, as a fresh sweep would record them."""
        table = table if table is not None else GraphTable.empty()
        with self.db:
            self.db.execute("UPDATE models SET graph=?, graph_version=?, nodes=?, macs=?, flops=?, params=?, memory=?"
                            " WHERE id=?", (table.to_bytes(), FEATURE_VERSION, len(table.ops), stats.get("macs"),
                                            stats.get("flops"), stats.get("params"), stats.get("memory"), model_id))
            if error:
                self.db.execute("UPDATE measurements SET latency_ms=NULL, error=? WHERE model_id=?", (error, model_id))

    def has_measurement(self, model_key: str, config_id: int, pass_: str = "main", retry_failed: bool = False,
                        remeasure_noisy: bool = False) -> bool:
        """Whether a finished measurement exists (failed or noisy ones count unless asked to redo them)."""
        q = ("SELECT m.latency_ms, m.noisy FROM measurements m JOIN models d ON d.id = m.model_id "
             "WHERE d.key=? AND m.config_id=? AND m.pass=?")
        row = self.db.execute(q, (model_key, config_id, pass_)).fetchone()
        if row is None:
            return False
        if row[0] is None:
            return not retry_failed
        return not (remeasure_noisy and row[1])

    def add_measurement(self, model_id: int, config_id: int, m, pass_: str = "main", contention: float | None = None,
                        noisy: bool = False, method: dict | None = None, duration_s: float | None = None) -> int:
        """Insert or replace one measurement (and its kernels) in one transaction."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        with self.db:
            old = self.db.execute("SELECT id FROM measurements WHERE model_id=? AND config_id=? AND pass=?",
                                  (model_id, config_id, pass_)).fetchone()
            if old:
                self.db.execute("DELETE FROM kernels WHERE measurement_id=?", (old[0],))
                self.db.execute("DELETE FROM measurements WHERE id=?", (old[0],))
            method_json = json.dumps(method or {}, sort_keys=True)
            self.db.execute("INSERT OR IGNORE INTO methods (method) VALUES (?)", (method_json,))
            method_id = self.db.execute("SELECT id FROM methods WHERE method=?", (method_json,)).fetchone()[0]
            cur = self.db.execute(
                "INSERT INTO measurements (model_id, config_id, pass, latency_ms, samples, statistic, spread,"
                " contention, noisy, error, info, method_id, measured_at, duration_s) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (model_id, config_id, pass_, m.latency_ms, pack_blocks(m.blocks) if m.ok else None,
                 "min_block_median" if m.ok else None, m.spread, contention, int(noisy), m.error,
                 json.dumps(m.info), method_id, now, duration_s))
            if m.kernels:
                self.db.executemany("INSERT INTO kernels VALUES (?,?,?,?,?)",
                                    [(cur.lastrowid, k["name"], k["op"], k["mean_us"], k["runs"]) for k in m.kernels])
        return cur.lastrowid

    def flag_noisy(self, measurement_ids: Sequence[int]) -> None:
        """Mark measurements noisy after the fact (left out of training, redone by --remeasure-noisy)."""
        with self.db:
            self.db.executemany("UPDATE measurements SET noisy=1 WHERE id=?", [(i,) for i in measurement_ids])

    def add_reference(self, config_id: int, latency_ms: float | None, spread: float | None) -> None:
        with self.db:
            self.db.execute("INSERT INTO reference (config_id, measured_at, latency_ms, spread) VALUES (?,?,?,?)",
                            (config_id, time.strftime("%Y-%m-%dT%H:%M:%S"), latency_ms, spread))

    # ----- reading --------------------------------------------------------------------------------

    def configs(self) -> list[dict]:
        return [{"id": i, "config": json.loads(c), "fingerprint": json.loads(f), "platform": p}
                for i, c, f, p in self.db.execute("SELECT id, config, fingerprint, platform FROM configs ORDER BY id")]

    def probe_reference(self, config_id: int) -> float | None:
        """The configuration's typical fast-regime probe: the median quicker probe of its clean main-pass
        rows (None: never gated). Labels corrected to it keep the scale of a typical gated measurement."""
        probes = [min(p) for (info,) in self.db.execute(
            "SELECT info FROM measurements WHERE config_id=? AND pass='main' AND noisy=0 AND json_valid(info)",
            (config_id,)) if (p := json.loads(info).get("probe_ms"))]
        return float(np.median(probes)) if probes else None

    def pass_names(self, config_id: int | None = None) -> list[str]:
        """The passes measured ('main' first, then the repeat rounds in order)."""
        q, args = "SELECT DISTINCT pass FROM measurements", ()
        if config_id is not None:
            q, args = q + " WHERE config_id=?", (config_id,)
        names = [p for (p,) in self.db.execute(q, args)]
        return sorted(names, key=lambda p: (p != "main", len(p), p))

    def keys_measured_between(self, start: str, end: str, pass_: str = "main") -> set[str]:
        """Keys of models whose ``pass_`` measurement was taken in [start, end) (ISO times, as stored): one
        sitting, to re-measure when its probes show it ran off the usual level."""
        q = ("SELECT d.key FROM measurements m JOIN models d ON d.id = m.model_id"
             " WHERE m.pass=? AND m.measured_at >= ? AND m.measured_at < ?")
        return {k for (k,) in self.db.execute(q, (pass_, start, end))}

    def rows(self, config_id: int | None = None, pass_: str = "main", ok_only: bool = True) -> list[dict]:
        """Measured models with their graph tables (one dict per measurement)."""
        q = ("SELECT d.id, d.key, d.name, d.family, d.graph, d.batch_size, d.onnx_path, d.split, m.latency_ms,"
             " m.config_id, m.error, m.spread, m.noisy, m.samples, d.source, m.info, m.measured_at FROM measurements m"
             " JOIN models d ON d.id = m.model_id WHERE m.pass=?")
        args: list = [pass_]
        if config_id is not None:
            q += " AND m.config_id=?"
            args.append(config_id)
        if ok_only:
            q += " AND m.latency_ms IS NOT NULL"
        out = []
        references = {c["id"]: self.probe_reference(c["id"]) for c in self.configs()
                      if config_id is None or c["id"] == config_id}
        levels = {}  # config id -> (sitting starts, their median probes) of this pass
        for sit in sittings(self, pass_, references=references):
            starts, probes = levels.setdefault(sit["config_id"], ([], []))
            starts.append(sit["start"])
            probes.append(sit["probe_ms"])
        for (mid, key, name, fam, graph, batch, path, split, lat, cid, err, spread, noisy, samples,
             source, info, at) in self.db.execute(q + " ORDER BY d.id", args):
            info = json.loads(info) if info else {}
            starts, probes = levels.get(cid, ([], []))
            level = probes[bisect.bisect_right(starts, at) - 1] if starts and at >= starts[0] else None
            out.append({"model_id": mid, "key": key, "name": name, "family": fam, "graph": graph, "batch_size": batch,
                        "onnx_path": path, "split": split, "latency_ms": lat, "config_id": cid, "error": err,
                        "spread": spread, "noisy": bool(noisy), "samples": samples, "source": source,
                        "info": info, "probe_reference": references[cid], "measured_at": at,
                        "regime_factor": regime_factor(info, references[cid]),
                        "sitting_factor": sitting_factor(info, references[cid], level)})
        return out


def file_key(path: Path, input_shapes: dict | None, batch_size: int | None) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update(json.dumps([input_shapes or {}, batch_size], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def merge(dst: Store, src: Store) -> int:
    """Copy models, configurations, measurements, kernels and reference checks of ``src`` into ``dst``;
    measurements already present (same model, configuration and pass) are kept."""
    config_map = {}
    for cid, key, config, fp, platform in src.db.execute("SELECT id, key, config, fingerprint, platform FROM configs"):
        config_map[cid] = dst.config_id(json.loads(config), json.loads(fp))
    model_cols = "key, name, family, source, onnx_path, graph, graph_version, nodes, macs, flops, params, memory, batch_size, split"
    model_map = {}
    for row in src.db.execute(f"SELECT id, {model_cols} FROM models"):
        existing = dst.model_id(row[1])
        if existing is None:
            with dst.db:
                existing = dst.db.execute(f"INSERT INTO models ({model_cols}) VALUES ({','.join('?' * 14)})",
                                          row[1:]).lastrowid
        model_map[row[0]] = existing
    method_map = {}
    for mid_, method in src.db.execute("SELECT id, method FROM methods"):
        with dst.db:
            dst.db.execute("INSERT OR IGNORE INTO methods (method) VALUES (?)", (method,))
        method_map[mid_] = dst.db.execute("SELECT id FROM methods WHERE method=?", (method,)).fetchone()[0]
    meas_cols = ("pass, latency_ms, samples, statistic, spread, contention, noisy, error, info, method_id, measured_at,"
                 " duration_s")
    added = 0
    for row in list(src.db.execute(f"SELECT id, model_id, config_id, {meas_cols} FROM measurements")):
        mid, cid = model_map[row[1]], config_map[row[2]]
        if dst.db.execute("SELECT 1 FROM measurements WHERE model_id=? AND config_id=? AND pass=?",
                          (mid, cid, row[3])).fetchone():
            continue
        with dst.db:
            values = list(row[3:])
            values[9] = method_map.get(values[9])
            new_id = dst.db.execute(f"INSERT INTO measurements (model_id, config_id, {meas_cols}) VALUES "
                                    f"({','.join('?' * 14)})", (mid, cid, *values)).lastrowid
            dst.db.executemany("INSERT INTO kernels VALUES (?,?,?,?,?)",
                               [(new_id, *k) for k in src.db.execute(
                                   "SELECT name, op, mean_us, runs FROM kernels WHERE measurement_id=?", (row[0],))])
        added += 1
    with dst.db:
        for cid, at, lat, spread in src.db.execute("SELECT config_id, measured_at, latency_ms, spread FROM reference"):
            dst.db.execute("INSERT INTO reference (config_id, measured_at, latency_ms, spread) VALUES (?,?,?,?)",
                           (config_map[cid], at, lat, spread))
    return added
