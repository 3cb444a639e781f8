"""What growing a dataset costs in git history: a folder of shards against one rewritten SQLite file.

    python examples/bench_dataset_growth.py --source profiles/cpu-onnxruntime/train --rows 200 --runs 6 \
        --out docs/results/dataset-growth.md

Replays the source dataset's first RUNS x ROWS measurements as RUNS profiling runs of ROWS models each.
Each run is committed to a scratch git repository twice over: as one new shard in a dataset folder
(what `profile --db FOLDER` writes), and as the whole single-file dataset rewritten with the new rows
(what `profile --db FILE.db` did). After each commit `git gc` packs the history; the table gives the
packed size after each run and what the run added.
"""
from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

from narformer_tvm.data import shards
from narformer_tvm.data.store import Store


def packed_bytes(repo: Path) -> int:
    subprocess.run(["git", "gc", "-q", "--prune=now"], cwd=repo, check=True)
    return sum(p.stat().st_size for p in (repo / ".git" / "objects" / "pack").glob("*.pack"))


def commit(repo: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", message],
                   cwd=repo, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="a dataset (folder or .db) to replay")
    ap.add_argument("--rows", type=int, default=200, help="measurements per simulated profiling run")
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp())
    try:
        with Store(args.source, readonly=True) as src:
            scratch = work / "source.db"
            shutil.copyfile(src.folder / shards.CACHE_NAME if src.folder else src.path, scratch)
        db = sqlite3.connect(scratch)
        shards.track(db)
        ids = [i for (i,) in db.execute("SELECT id FROM measurements ORDER BY id")]
        folder_repo, file_repo = work / "folder", work / "file"
        for repo in (folder_repo, file_repo):
            repo.mkdir()
            subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        (folder_repo / "data").mkdir()
        rows, replayed = [], []
        for run in range(args.runs):
            chunk = ids[run * args.rows:(run + 1) * args.rows]
            if len(chunk) < args.rows:
                break
            with db:
                db.execute("DELETE FROM dirty")
                db.executemany("INSERT INTO dirty VALUES ('m', ?)", [(i,) for i in chunk])
            records = shards.export_dirty(db)
            shard = shards.flush(db, folder_repo / "data")
            replayed += records
            single = file_repo / "dataset.db"
            single.unlink(missing_ok=True)
            with Store(single) as s:  # the whole file as it stands after this run
                with s.db:
                    shards.import_rows(s.db, replayed)
            for repo in (folder_repo, file_repo):
                commit(repo, f"run {run}")
            rows.append((run + 1, (run + 1) * args.rows, shard.stat().st_size, single.stat().st_size,
                         packed_bytes(folder_repo), packed_bytes(file_repo)))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines = ["# Growing a dataset: history added per profiling run", "",
             f"`python examples/bench_dataset_growth.py --source {args.source} --rows {args.rows} --runs {args.runs}"
             f" --out {args.out}`", "",
             f"Each run adds {args.rows} measurements (with their models) of `{args.source}`. Packed git history "
             "after each run's commit (`git gc`), and what that run added to it.", "",
             "| run | rows | new shard | rewritten .db | history, folder of shards | added | history, one .db | added |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    prev_f = prev_s = 0
    for run, n, shard, single, hist_f, hist_s in rows:
        lines.append(f"| {run} | {n} | {shard / 1e3:.0f} kB | {single / 1e3:.0f} kB | {hist_f / 1e3:.0f} kB | "
                     f"{(hist_f - prev_f) / 1e3:.0f} kB | {hist_s / 1e3:.0f} kB | {(hist_s - prev_s) / 1e3:.0f} kB |")
        prev_f, prev_s = hist_f, hist_s
    if len(rows) > 1:
        per_row_f = (rows[-1][4] - rows[0][4]) / (rows[-1][1] - rows[0][1])
        per_row_s = (rows[-1][5] - rows[0][5]) / (rows[-1][1] - rows[0][1])
        lines += ["", f"After the first run, each further measurement added {per_row_f / 1e3:.2f} kB of packed history "
                  f"as a shard and {per_row_s / 1e3:.2f} kB as a rewritten file. Both grow with the new rows once "
                  "`git gc` delta-compresses the file's versions; until a repack, and in every checkout's working "
                  "tree, each version of the file is whole. Shards are never modified, so datasets measured on "
                  "several machines at once merge as new files instead of conflicting on one binary."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
