"""Dataset folders: a dataset kept as files that are only ever added, never rewritten.

A folder holds shards: SQLite files (``*.db``, e.g. a dataset that predates folders) and gzipped JSON
lines (``*.rows.gz``), one per run that wrote to the dataset. Reading builds a local SQLite cache
(``.cache.db``, never committed) from every shard not yet in it; writing goes to the cache, which
records what changed, and closing the store writes those rows as one new shard. A dataset grown by a
profiling run adds one file to version control, the size of the new rows.
"""
from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Callable

from narformer_tvm.errors import InputError

ROWS_SUFFIX = ".rows.gz"
CACHE_NAME = ".cache.db"
FORMAT = "narformer-tvm-rows"
FORMAT_VERSION = 1

# Every change to these tables is recorded in `dirty` (unless a shard is being read in), so that the
# next shard holds exactly what this checkout added or changed.
TRACKING = """
CREATE TABLE IF NOT EXISTS shards (name TEXT PRIMARY KEY, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dirty (kind TEXT NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (kind, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS importing (flag INTEGER NOT NULL);
INSERT INTO importing SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM importing);
CREATE TRIGGER IF NOT EXISTS dirty_m_ins AFTER INSERT ON measurements WHEN (SELECT flag FROM importing) = 0
    BEGIN INSERT OR IGNORE INTO dirty VALUES ('m', NEW.id); END;
CREATE TRIGGER IF NOT EXISTS dirty_m_upd AFTER UPDATE ON measurements WHEN (SELECT flag FROM importing) = 0
    BEGIN INSERT OR IGNORE INTO dirty VALUES ('m', NEW.id); END;
CREATE TRIGGER IF NOT EXISTS dirty_d_ins AFTER INSERT ON models WHEN (SELECT flag FROM importing) = 0
    BEGIN INSERT OR IGNORE INTO dirty VALUES ('d', NEW.id); END;
CREATE TRIGGER IF NOT EXISTS dirty_d_upd AFTER UPDATE ON models WHEN (SELECT flag FROM importing) = 0
    BEGIN INSERT OR IGNORE INTO dirty VALUES ('d', NEW.id); END;
CREATE TRIGGER IF NOT EXISTS dirty_r_ins AFTER INSERT ON reference WHEN (SELECT flag FROM importing) = 0
    BEGIN INSERT OR IGNORE INTO dirty VALUES ('r', NEW.id); END;
"""

MODEL_COLS = ("key", "name", "family", "source", "onnx_path", "graph", "graph_version", "nodes", "macs", "flops",
              "params", "memory", "batch_size", "split")
MEAS_COLS = ("pass", "latency_ms", "samples", "statistic", "spread", "contention", "noisy", "error", "info",
             "measured_at", "duration_s")
BLOBS = ("graph", "samples")


def is_folder(path: str | Path) -> bool:
    """A dataset folder: an existing directory, or a new path without a file suffix (``.db``: one SQLite file)."""
    path = Path(path)
    return path.is_dir() or (not path.exists() and not path.suffix)


def shard_files(folder: Path) -> list[Path]:
    """The folder's shards in the order they are read: SQLite ones first, then by name (= time written)."""
    dbs = sorted(p for p in folder.glob("*.db") if p.name != CACHE_NAME)
    return dbs + sorted(folder.glob("*" + ROWS_SUFFIX))


def cache_path(folder: Path) -> Path:
    """Where the folder's cache lives: inside it, or in the temporary directory for a read-only folder."""
    if os.access(folder, os.W_OK):
        return folder / CACHE_NAME
    import hashlib
    import tempfile

    tag = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"narformer-tvm-{tag}{CACHE_NAME}"


@contextlib.contextmanager
def cache_lock(cache: Path):
    """Held while a cache is brought up to date: two processes opening a folder whose cache lacks shards
    (two trainings started together, say) would otherwise import the same rows twice."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform
        yield
        return
    with open(str(cache) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def track(db: sqlite3.Connection) -> None:
    db.executescript(TRACKING)


def sync(db: sqlite3.Connection, folder: Path, merge_db: Callable[[Path], None]) -> list[Path]:
    """Read into the cache every shard it lacks; returns them. A shard that changed or vanished since
    (another branch checked out, say) means the cache no longer matches: the caller rebuilds it."""
    known = dict(db.execute("SELECT name, size FROM shards"))
    files = shard_files(folder)
    present = {p.name: p.stat().st_size for p in files}
    if any(present.get(name) != size for name, size in known.items()):
        raise StaleCache(folder)
    added = [p for p in files if p.name not in known]
    for p in added:
        with db:
            db.execute("UPDATE importing SET flag=1")
        try:
            if p.suffix == ".db":
                merge_db(p)
            else:
                with db:
                    import_rows(db, read_rows(p))
        finally:
            with db:
                db.execute("UPDATE importing SET flag=0")
        with db:
            db.execute("INSERT OR REPLACE INTO shards VALUES (?, ?)", (p.name, p.stat().st_size))
    return added


class StaleCache(Exception):
    """The cache was built from shards that are no longer the folder's."""


def has_changes(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM dirty LIMIT 1").fetchone() is not None


def flush(db: sqlite3.Connection, folder: Path) -> Path | None:
    """Write the rows changed since the last flush as a new shard (None when nothing changed)."""
    records = export_dirty(db)
    if not records:
        return None
    host = "".join(c for c in socket.gethostname() if c.isalnum())[:12] or "host"
    while True:  # names sort by the time written, which is the order shards are read in
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        path = folder / f"{stamp}-{host}-{os.getpid()}{ROWS_SUFFIX}"
        if not path.exists():
            break
    tmp = path.with_name(path.name + ".tmp")
    header = {"t": "shard", "format": FORMAT, "version": FORMAT_VERSION, "written_at": stamp}
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=9) as f:
        for rec in [header, *records]:
            f.write(json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n")
    tmp.replace(path)
    with db:
        db.execute("DELETE FROM dirty")
        db.execute("INSERT OR REPLACE INTO shards VALUES (?, ?)", (path.name, path.stat().st_size))
    return path


def _encode(row: dict) -> dict:
    return {k: (base64.b64encode(v).decode() if k in BLOBS and v is not None else v) for k, v in row.items()}


def _decode(rec: dict) -> dict:
    return {k: (base64.b64decode(v) if k in BLOBS and v is not None else v) for k, v in rec.items()}


def export_dirty(db: sqlite3.Connection) -> list[dict]:
    """The changed rows as self-contained records: each measurement brings its model and configuration."""
    ids = {kind: [i for (i,) in db.execute("SELECT id FROM dirty WHERE kind=? ORDER BY id", (kind,))]
           for kind in ("m", "d", "r")}
    if not any(ids.values()):
        return []
    q = lambda sql, args=(): db.execute(sql, args)  # noqa: E731
    meas = []
    for mid in ids["m"]:
        row = q(f"SELECT m.model_id, m.config_id, {', '.join('m.' + c for c in MEAS_COLS)}, t.method FROM measurements m"
                " LEFT JOIN methods t ON t.id = m.method_id WHERE m.id=?", (mid,)).fetchone()
        if row is not None:  # replaced again since: its successor is dirty too
            meas.append((mid, row))
    model_ids = set(ids["d"]) | {row[0] for _, row in meas}
    config_ids = {row[1] for _, row in meas}
    refs = [q("SELECT config_id, measured_at, latency_ms, spread FROM reference WHERE id=?", (r,)).fetchone()
            for r in ids["r"]]
    config_ids |= {r[0] for r in refs if r}
    configs = {cid: q("SELECT key, config, fingerprint, platform FROM configs WHERE id=?", (cid,)).fetchone()
               for cid in sorted(config_ids)}
    models = {did: q(f"SELECT {', '.join(MODEL_COLS)} FROM models WHERE id=?", (did,)).fetchone()
              for did in sorted(model_ids)}
    out = [{"t": "config", "key": k, "config": c, "fingerprint": f, "platform": p} for k, c, f, p in configs.values()]
    out += [{"t": "model", **_encode(dict(zip(MODEL_COLS, row)))} for row in models.values()]
    for mid, row in meas:
        kernels = [list(k) for k in q("SELECT name, op, mean_us, runs FROM kernels WHERE measurement_id=?", (mid,))]
        out.append({"t": "measurement", "model": models[row[0]][0], "config": configs[row[1]][0],
                    **_encode(dict(zip(MEAS_COLS, row[2:-1]))), "method": row[-1], "kernels": kernels})
    out += [{"t": "reference", "config": configs[r[0]][0], "measured_at": r[1], "latency_ms": r[2], "spread": r[3]}
            for r in refs if r]
    return out


def read_rows(path: Path) -> list[dict]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{path}: not a readable dataset shard ({type(e).__name__}: {e})",
                         hint="restore it from version control, or move it out of the dataset folder") from None
    head = records[0] if records else {}
    if head.get("format") != FORMAT or head.get("version") != FORMAT_VERSION:
        raise InputError(f"{path}: shard format {head.get('format')!r} v{head.get('version')}, this narformer-tvm "
                         f"reads {FORMAT!r} v{FORMAT_VERSION}", hint="use the narformer-tvm release that wrote it")
    return records[1:]


def import_rows(db: sqlite3.Connection, records: list[dict]) -> None:
    """Apply a shard's records: later shards replace a model's graph and a (model, configuration, pass)
    measurement; configurations and reference checks accumulate."""
    configs, models = {}, {}

    def config_id(key):
        if key not in configs:
            configs[key] = db.execute("SELECT id FROM configs WHERE key=?", (key,)).fetchone()[0]
        return configs[key]

    def model_id(key):
        if key not in models:
            models[key] = db.execute("SELECT id FROM models WHERE key=?", (key,)).fetchone()[0]
        return models[key]

    for rec in records:
        t = rec["t"]
        if t == "config":
            db.execute("INSERT OR IGNORE INTO configs (key, config, fingerprint, platform) VALUES (?,?,?,?)",
                       (rec["key"], rec["config"], rec["fingerprint"], rec["platform"]))
        elif t == "model":
            row = _decode(rec)
            values = [row.get(c) for c in MODEL_COLS]
            if db.execute("SELECT 1 FROM models WHERE key=?", (row["key"],)).fetchone():
                db.execute(f"UPDATE models SET {', '.join(c + '=?' for c in MODEL_COLS[1:])} WHERE key=?",
                           (*values[1:], row["key"]))
            else:
                db.execute(f"INSERT INTO models ({', '.join(MODEL_COLS)}) VALUES ({','.join('?' * len(MODEL_COLS))})",
                           values)
        elif t == "measurement":
            row = _decode(rec)
            mid, cid = model_id(row["model"]), config_id(row["config"])
            for (old,) in db.execute("SELECT id FROM measurements WHERE model_id=? AND config_id=? AND pass=?",
                                     (mid, cid, row["pass"])).fetchall():
                db.execute("DELETE FROM kernels WHERE measurement_id=?", (old,))
                db.execute("DELETE FROM measurements WHERE id=?", (old,))
            method_id = None
            if row.get("method") is not None:
                db.execute("INSERT OR IGNORE INTO methods (method) VALUES (?)", (row["method"],))
                method_id = db.execute("SELECT id FROM methods WHERE method=?", (row["method"],)).fetchone()[0]
            new = db.execute(f"INSERT INTO measurements (model_id, config_id, method_id, {', '.join(MEAS_COLS)}) "
                             f"VALUES ({','.join('?' * (3 + len(MEAS_COLS)))})",
                             (mid, cid, method_id, *[row.get(c) for c in MEAS_COLS])).lastrowid
            db.executemany("INSERT INTO kernels VALUES (?,?,?,?,?)", [(new, *k) for k in row.get("kernels", [])])
        elif t == "reference":
            cid = config_id(rec["config"])
            if not db.execute("SELECT 1 FROM reference WHERE config_id=? AND measured_at=?",
                              (cid, rec["measured_at"])).fetchone():
                db.execute("INSERT INTO reference (config_id, measured_at, latency_ms, spread) VALUES (?,?,?,?)",
                           (cid, rec["measured_at"], rec["latency_ms"], rec["spread"]))
