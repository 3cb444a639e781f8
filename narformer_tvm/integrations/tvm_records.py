"""MetaSchedule tuning records: reading them, and exploring by prediction then measuring the best few."""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

from narformer_tvm.integrations.tvm_env import fast_builder, meta_schedule


FEATURE_CACHE = "narformer_features.npz"  # beside the database: replaying traces costs ~25 ms a record


def median_seconds(run_secs, error_msg=None) -> float:
    """A measurement's run time: the median of its repeats; ``math.inf`` for a failed or missing one."""
    if not run_secs or error_msg is not None:
        return math.inf
    return float(np.median([float(s) for s in run_secs]))


def database_files(work_dir: str | Path) -> tuple[Path, Path]:
    """The workload and tuning-record files of the MetaSchedule JSON database in ``work_dir``."""
    from narformer_tvm.errors import InputError

    wl, tr = Path(work_dir) / "database_workload.json", Path(work_dir) / "database_tuning_record.json"
    if not wl.is_file() or not tr.is_file():
        raise InputError(f"{work_dir}: no MetaSchedule database (database_workload.json, database_tuning_record.json)",
                         hint="point at the --work-dir of `narformer-tvm tune` or of a tune_tir/tune_relax run, "
                              "or a `tunedb collect` folder")
    return wl, tr


def read_tuning_records(work_dir: str, cache: bool = True):
    """(task hash, per-store features, costs in s) for each workload of a MetaSchedule JSON database
    (``database_workload.json`` + ``database_tuning_record.json`` in ``work_dir``). With ``cache``, the
    features are kept in ``work_dir``/narformer_features.npz and reused while the records file is unchanged."""
    wl, tr = database_files(work_dir)
    stamp = np.array([tr.stat().st_size, wl.stat().st_size], dtype=np.int64)
    path = Path(work_dir) / FEATURE_CACHE
    if cache and path.is_file():
        try:
            with np.load(path) as z:
                if np.array_equal(z["stamp"], stamp):
                    return _unpack(z)
        except (OSError, ValueError, KeyError):  # a torn or foreign file: extract again
            pass
    tasks = _extract(wl, tr)
    if cache:
        from narformer_tvm.fileio import write_atomically

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would add .npz to a path
                np.savez(f, stamp=stamp, **_pack(tasks))
        write_atomically(path, save)
    return tasks


def _extract(wl: Path, tr: Path) -> list:
    import tvm

    ms = meta_schedule()
    db = ms.database.JSONDatabase(str(wl), str(tr), allow_missing=False)
    extractor = ms.feature_extractor.PerStoreFeature()
    by_task: dict[str, tuple[list, list]] = {}
    for rec in db.get_all_tuning_records():
        mod = rec.workload.mod
        sch = tvm.s_tir.Schedule(mod)
        try:
            rec.trace.apply_to_schedule(sch, remove_postproc=False)
        except Exception:  # a record whose trace no longer applies: skip it
            continue
        ctx = ms.TuneContext(mod=mod, target=rec.target)
        cand = ms.MeasureCandidate(sch, rec.args_info)
        feat = extractor.extract_from(ctx, [cand])[0].numpy().astype(np.float32)
        cost = median_seconds(rec.run_secs)
        key = ms.utils.shash2hex(mod)
        by_task.setdefault(key, ([], []))
        by_task[key][0].append(feat)
        by_task[key][1].append(cost)
    return [(k, f, c) for k, (f, c) in by_task.items()]


def _pack(tasks: list) -> dict:
    """Ragged (task, features, costs) lists as flat arrays: records per task, stores per record."""
    feats = [f for _, fs, _ in tasks for f in fs]
    width = feats[0].shape[1] if feats else 0
    return {"keys": np.array([k for k, _, _ in tasks], dtype=str),
            "records": np.array([len(c) for _, _, c in tasks], dtype=np.int64),
            "stores": np.array([len(f) for f in feats], dtype=np.int64),
            "features": np.concatenate(feats) if feats else np.zeros((0, width), np.float32),
            "costs": np.array([c for _, _, cs in tasks for c in cs], dtype=np.float64)}


def _unpack(z) -> list:
    stores = np.split(z["features"], np.cumsum(z["stores"])[:-1]) if len(z["stores"]) else []
    out, i = [], 0
    for key, n in zip(z["keys"], z["records"]):
        out.append((str(key), [f.reshape(-1, z["features"].shape[1]) for f in stores[i:i + n]],
                    [float(c) for c in z["costs"][i:i + n]]))
        i += n
    return out


PREDICTED_SUFFIX = ".predicted"


PREDICTED_UNIT_S = 1e-6  # pseudo run time of a score-1.0 candidate; only the order within a task matters


def predict_only(cost_model):
    """(builder, runner) that score each candidate with ``cost_model`` instead of compiling and running
    it: tuning explores with predictions only. The cost model must be trained (pre-trained, e.g. with
    ``tunedb pretrain``) and is frozen, since learning from its own predictions would be circular.
    Measure the best predicted schedules afterwards with ``measure_top``."""
    import tvm
    from tvm.ir.utils import derived_object

    ms = meta_schedule()
    if not getattr(cost_model, "trained", False):
        from narformer_tvm.errors import InputError

        raise InputError("predict-only tuning needs a trained cost model",
                         hint="pre-train one with `narformer-tvm tunedb pretrain WORK_DIR --out cm.pt` and pass it")
    cost_model.frozen = True

    @derived_object
    class PredictBuilder(ms.builder.PyBuilder):
        def build(self, build_inputs):
            out = []
            for inp in build_inputs:
                try:
                    ctx = ms.TuneContext(mod=inp.mod, target=inp.target)
                    cand = ms.MeasureCandidate(tvm.s_tir.Schedule(inp.mod),
                                               ms.arg_info.ArgInfo.from_entry_func(inp.mod, remove_preproc=True))
                    score = float(cost_model.predict(ctx, [cand])[0])
                    # A real (empty) artifact folder: MetaSchedule's clean-up callback removes it.
                    path = os.path.join(tempfile.mkdtemp(prefix="narformer-predicted-"), f"{score!r}{PREDICTED_SUFFIX}")
                    out.append(ms.builder.BuilderResult(path, None))
                except Exception as e:  # an unscorable candidate is a failed build, as in real tuning
                    out.append(ms.builder.BuilderResult(None, f"{type(e).__name__}: {e}"))
            return out

    @derived_object
    class PredictedResult(ms.runner.PyRunnerFuture):
        def __init__(self, result):
            super().__init__()
            self.res = result

        def done(self):
            return True

        def result(self):
            return self.res

    @derived_object
    class PredictRunner(ms.runner.PyRunner):
        def run(self, runner_inputs):
            futures = []
            for inp in runner_inputs:
                score = float(os.path.basename(str(inp.artifact_path))[:-len(PREDICTED_SUFFIX)])
                secs = PREDICTED_UNIT_S / score if score > 1e-9 and math.isfinite(score) else None
                futures.append(PredictedResult(ms.runner.RunnerResult([secs] if secs else None,
                                                                      None if secs else "predicted to fail")))
            return futures

    return PredictBuilder(), PredictRunner()


def measure_top(predicted, database, target, top_n: int = 4, builder=None, runner=None) -> int:
    """Build and run the ``top_n`` best predicted schedules of every workload in the ``predicted``
    database; commit the real measurements to ``database``. Returns how many were measured."""
    import tvm

    ms = meta_schedule()
    builder = builder or fast_builder()
    runner = runner or ms.runner.LocalRunner()
    n = 0
    for rec0 in _workload_heads(predicted):
        workload = database.commit_workload(rec0.workload.mod)
        records = predicted.get_top_k(rec0.workload, top_n)
        schedules = []
        for rec in records:
            sch = tvm.s_tir.Schedule(rec.workload.mod)
            rec.trace.apply_to_schedule(sch, remove_postproc=False)
            schedules.append((rec, sch))
        built = builder.build([ms.builder.BuilderInput(sch.mod, target) for _, sch in schedules])
        run_inputs, keep = [], []
        for (rec, sch), b in zip(schedules, built):
            if b.error_msg is None:
                run_inputs.append(ms.runner.RunnerInput(b.artifact_path, "cuda" if target.kind.name == "cuda" else "cpu",
                                                        ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)))
                keep.append(rec)
        for rec, fut in zip(keep, runner.run(run_inputs)):
            res = fut.result()
            database.commit_tuning_record(ms.database.TuningRecord(
                rec.trace, workload, [float(s) for s in res.run_secs] if res.error_msg is None else None, target,
                rec.args_info))
            n += 1
    return n


def _workload_heads(db):
    """One tuning record per workload of a database (its best)."""
    seen, heads = set(), []
    for rec in db.get_all_tuning_records():
        key = meta_schedule().utils.shash2hex(rec.workload.mod)
        if key not in seen:
            seen.add(key)
            heads.append(rec)
    return heads
