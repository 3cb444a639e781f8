"""Datasets: the SQLite store of graphs and measured latencies, and batching of encoded graphs
(many graphs of different sizes in one padded, masked batch)."""
from __future__ import annotations

import bisect
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .errors import InputError
from .features import FEATURE_VERSION, EncodedGraph, GraphTable

if TYPE_CHECKING:
    import torch


@dataclass
class Batch:  # fields are torch tensors
    x: "torch.Tensor"  # (B, N, F) token features, zero on padding
    adj: "torch.Tensor"  # (B, N, N) symmetric adjacency with self-loops on real nodes
    degree: "torch.Tensor"  # (B, N, 2) in/out connection counts
    mask: "torch.Tensor"  # (B, N) True on real nodes
    static: "torch.Tensor"  # (B, S) graph-level features
    cost: "torch.Tensor"  # (B, N, 2) per-operator GFLOPs and GB, zero on padding (and for cells)
    kind: "torch.Tensor"  # (B, N) operator kind (features.KINDS index)
    y: "torch.Tensor | None" = None  # (B,) targets, when known

    def inputs(self) -> tuple["torch.Tensor", ...]:
        return self.x, self.adj, self.degree, self.mask, self.static, self.cost, self.kind

    def __len__(self) -> int:
        return self.x.shape[0]


def collate(graphs: Sequence[EncodedGraph], targets: Sequence[float] | None = None) -> Batch:
    b = len(graphs)
    n = max(g.n for g in graphs)
    f = graphs[0].x.shape[1]
    x = np.zeros((b, n, f), dtype=np.float32)
    adj = np.zeros((b, n, n), dtype=np.float32)
    degree = np.zeros((b, n, 2), dtype=np.float32)
    mask = np.zeros((b, n), dtype=bool)
    cost = np.zeros((b, n, 2), dtype=np.float32)
    kind = np.zeros((b, n), dtype=np.int64)
    for i, g in enumerate(graphs):
        x[i, :g.n] = g.x
        if g.cost is not None:
            cost[i, :g.n] = g.cost
        if g.kind is not None:
            kind[i, :g.n] = g.kind
        mask[i, :g.n] = True
        idx = np.arange(g.n)
        adj[i, idx, idx] = 1.0
        if len(g.edges):
            src, dst = g.edges[:, 0], g.edges[:, 1]
            adj[i, src, dst] = 1.0
            adj[i, dst, src] = 1.0
            np.add.at(degree[i, :, 1], src, 1.0)
            np.add.at(degree[i, :, 0], dst, 1.0)
    import torch  # lazy: profiling reads and writes datasets without torch

    static = np.stack([g.static for g in graphs]).astype(np.float32)
    y = torch.tensor(np.asarray(targets, dtype=np.float32)) if targets is not None else None
    return Batch(torch.from_numpy(x), torch.from_numpy(adj), torch.from_numpy(degree),
                 torch.from_numpy(mask), torch.from_numpy(static), torch.from_numpy(cost), torch.from_numpy(kind), y)


def size_buckets(sizes: Sequence[int], batch_size: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Index batches of similar graph sizes (less padding); shuffled when ``rng`` is given."""
    order = np.argsort(np.asarray(sizes), kind="stable")
    if rng is not None:  # jitter so that batches differ between epochs
        noisy = np.asarray(sizes) * rng.uniform(0.9, 1.1, len(sizes))
        order = np.argsort(noisy, kind="stable")
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


# ----- the dataset store (SQLite) -----------------------------------------------------------------

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


# Labels move with the probe's slowdown to this power: chosen on the Zen 5 profile's first 71 pairs of
# measurements (0.5 against 0, 0.25, 0.75, 1); on the 232 measured later it gave 2.97% against 2.91%
# at 0.75 and 3.45% raw (docs/results/regime-correction.md). The probe, a network of small operators,
# is slowed more than most.
REGIME_EXPONENT = 0.5
CORRECTED_LABELS = "regime-corrected"  # load_samples' and profiles' ``labels`` when labels were divided by it
SITTING_CORRECTED_LABELS = "sitting-corrected"  # ... when divided by sitting_factor instead
# appended to ``labels`` when a model measured more than once (main and repeat passes, each clean) is labelled
# by the geometric mean of its passes: k passes on different sittings divide a sitting's offset and the
# measurement noise by about sqrt(k)
MEAN_OVER_PASSES = ", mean over passes"


def repeat_pass_name(round_: int) -> str:
    """The pass a repeat round writes: round 1 is the noise-floor pass ('repeat'), later rounds measure the
    same models again on other sittings ('repeat2', ...), so that mean-over-passes labels average sittings."""
    if round_ < 1:
        raise ValueError(f"repeat rounds count from 1, not {round_}")
    return "repeat" if round_ == 1 else f"repeat{round_}"


def is_pass_name(name: str) -> bool:
    return name in ("main", "repeat") or (name.startswith("repeat") and name[6:].isdigit() and int(name[6:]) >= 2)


def regime_factor(info: dict | None, reference_ms: float | None, exponent: float = REGIME_EXPONENT) -> float:
    """How much slower (> 1) or quicker than its configuration's typical fast regime a gated measurement
    ran, judged by its probes (1 without probes).

    The regime gate (profile.RegimeGate) probes a reference network just before and after each model
    and accepts the row while both probes stay within REGIME_MARGIN of the fastest probe of that sweep,
    so a label still carries up to 15% of drift, plus whatever the fast level itself moved between
    sittings. The factor is the quicker probe over ``reference_ms`` (Store.probe_reference), to the
    REGIME_EXPONENT: dividing labels by it took the Zen 5 profile's main-vs-repeat disagreement from
    3.34% to 2.74% over 303 pairs, and its published networks' from 1.74% to 1.29% (docs/profiling.md)."""
    probes = (info or {}).get("probe_ms")
    if not probes or not reference_ms:
        return 1.0
    return (min(probes) / reference_ms) ** exponent


def sitting_factor(info: dict | None, reference_ms: float | None, sitting_ms: float | None,
                   exponent: float = REGIME_EXPONENT) -> float:
    """regime_factor with the sitting's whole level taken out in full: (the sitting's median quicker probe
    over ``reference_ms``) times (the row's quicker probe over the sitting's) to REGIME_EXPONENT (1 without
    probes). A sitting whose probes all ran a few percent off the usual level ran every network about as
    far off, while the flips within a sitting slow small operators more than most networks: pairs of
    measurements from sittings at different levels agree best so (docs/profiling.md)."""
    probes = (info or {}).get("probe_ms")
    if not probes or not reference_ms or not sitting_ms:
        return 1.0
    return (sitting_ms / reference_ms) * (min(probes) / sitting_ms) ** exponent


def pack_blocks(blocks: list[list[float]]) -> bytes:
    """[n_blocks, runs_0, runs_1, ...] as uint16 then all samples as float32."""
    head = np.array([len(blocks), *[len(b) for b in blocks]], dtype=np.uint16)
    body = np.array([x for b in blocks for x in b], dtype=np.float32)
    return head.tobytes() + body.tobytes()


def unpack_blocks(blob: bytes) -> list[list[float]]:
    n = int(np.frombuffer(blob, dtype=np.uint16, count=1)[0])
    sizes = np.frombuffer(blob, dtype=np.uint16, count=n + 1)[1:]
    body = np.frombuffer(blob, dtype=np.float32, offset=2 * (n + 1))
    out, k = [], 0
    for s in sizes:
        out.append(body[k:k + s].astype(float).tolist())
        k += s
    return out


class Store:
    """A dataset of graphs and measured latencies in one SQLite file, written transactionally."""

    def __init__(self, path: str | Path, create: bool = True, readonly: bool = False):
        import sqlite3

        self.path = Path(path)
        if (readonly or not create) and not self.path.is_file():
            raise InputError(f"{self.path}: no such dataset", hint="create one with `narformer-tvm profile --db PATH`")
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

    def close(self) -> None:
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


# ----- summaries, import, export, merge -----------------------------------------------------------

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


SITTING_GAP_S = 20 * 60  # a pause this long between two measurements starts a new sitting


def sittings(store: Store, pass_: str = "main", gap_s: float = SITTING_GAP_S,
             references: dict[int, float | None] | None = None) -> list[dict]:
    """Runs of measurements without a pause of ``gap_s``, per configuration: when, how many rows, and how
    quick the regime probes ran against the configuration's typical level (Store.probe_reference). A
    sitting far off that level is one to re-measure (`profile --measured-between START END --repeat-pass 1`).
    ``references``: the configurations to cover and their typical probes, where the caller has them."""
    from datetime import datetime

    q = ("SELECT measured_at, noisy, latency_ms, info FROM measurements WHERE config_id=? AND pass=?"
         " ORDER BY measured_at")
    out = []
    for cfg in store.configs():
        if references is not None and cfg["id"] not in references:
            continue
        found: list[dict] = []
        last = None
        for at, noisy, lat, info in store.db.execute(q, (cfg["id"], pass_)):
            t = datetime.fromisoformat(at)
            if not found or (t - last).total_seconds() > gap_s:
                found.append({"config_id": cfg["id"], "pass": pass_, "start": at, "rows": 0, "noisy": 0, "failed": 0,
                              "probes": []})
            last = t
            current = found[-1]
            current.update(end=at, rows=current["rows"] + 1, noisy=current["noisy"] + noisy,
                           failed=current["failed"] + (lat is None))
            probes = json.loads(info).get("probe_ms") if info else None
            if probes and not noisy:
                current["probes"].append(min(probes))
        reference = references[cfg["id"]] if references is not None else store.probe_reference(cfg["id"])
        for sit in found:
            probes = sit.pop("probes")
            sit["probe_ms"] = float(np.median(probes)) if probes else None
            sit["probe_vs_typical"] = sit["probe_ms"] / reference - 1 if probes and reference else None
        out += found
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
                    from .zoo import Variant

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
    from .errors import NarformerError
    from .features import table
    from .graph import build_graph

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
        from .profile import file_key
        from .backends import Measurement

        key = file_key(path, None, batch_i)
        model_id = store.add_model(key, f"{family}-{gid}", table(g),
                                   {"macs": g.macs, "flops": g.flops, "params": g.params, "memory": g.memory,
                                    "batch_size": g.batch_size}, family=family, source={"path": str(path), "gt": str(gt)},
                                   onnx_path=str(path), split=split)
        config_id = store.config_id({"runtime": "imported", "target": platform, "threads": 0}, {"platform": platform})
        store.add_measurement(model_id, config_id, Measurement(blocks=[[lat_f]], info={"imported_from": str(gt)}))
        n += 1
    return n, errors


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


# ----- resumable results files --------------------------------------------------------------------

def write_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """``write`` a temporary file beside ``path``, then rename it over ``path``: an interrupted save
    (Ctrl-C, a crash) never leaves a half-written file where a resumed run or a user reads it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_results(path: Path, matches: Callable[[dict], bool]) -> dict | None:
    """The JSON state saved in ``path`` (which exists) when it parses and ``matches`` accepts it, else None."""
    try:
        state = json.loads(path.read_text())
    except ValueError:
        return None
    return state if isinstance(state, dict) and matches(state) else None


def resume_results(path: Path | None, matches: Callable[[dict], bool],
                   notice: Callable[[str], None] = warnings.warn) -> dict | None:
    """The JSON state an interrupted evaluation saved in ``path``, when ``matches`` accepts it as the
    same run. A file of another run (or an unreadable one) is moved aside, never overwritten: its
    results took hours; ``notice`` says where."""
    if path is None or not path.exists():
        return None
    state = read_results(path, matches)
    if state is not None:
        return state
    stamp, n = time.strftime("%Y%m%d-%H%M%S"), 1
    aside = path.with_name(f"{path.stem}-{stamp}{path.suffix}")
    while aside.exists():  # a second move within the same second
        n += 1
        aside = path.with_name(f"{path.stem}-{stamp}-{n}{path.suffix}")
    path.replace(aside)
    notice(f"{path} held results of other settings: moved to {aside}")
    return None
