"""A TenSet-style corpus of tuning records: the tasks of many networks, schedules sampled by
MetaSchedule's search and measured on this machine, in one database that `tunedb pretrain` reads.

Identical tasks of different networks are one workload in the database and collected once (a task
whose search space holds fewer schedules than asked is not tuned again for the next network). A task
already collected is skipped, and each network is marked done in ``networks.jsonl`` when its
tasks are: an interrupted collection goes on where it stopped. Failed builds and runs stay in the
database as records without run times (MetaSchedule's own failure records); a network TVM cannot
import is marked with its error and not retried.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from narformer_tvm.errors import InputError

NETWORKS = "networks.jsonl"  # one line per network finished (or failed), in order
TASKS = "tasks.jsonl"  # one line per task tuned: its workload hash and the trials asked for
COST_MODELS = ("xgb", "random")  # the search's own guides: schedules as the default tuner samples them


@dataclass
class NetworkRecord:
    name: str
    path: str
    tasks: int = 0
    tasks_collected: int = 0  # tasks tuned by this network (the others were already in the database)
    records: int = 0  # records this network added
    seconds: float = 0.0
    error: str | None = None
    task_errors: list[str] = field(default_factory=list)


def _read_lines(path: Path) -> list[dict]:
    """The records of a jsonl file; a last line torn by a crash mid-append is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in records if r]


def finished(out_dir: Path) -> dict[str, dict]:
    return {r["name"]: r for r in _read_lines(out_dir / NETWORKS)}


def _tuned_tasks(out_dir: Path) -> dict[str, int]:
    return {r["workload"]: r["trials"] for r in _read_lines(out_dir / TASKS)}


def _append(path: Path, record: dict) -> None:
    # Appending keeps each record O(1); a line torn by a crash is dropped by _read_lines, and the
    # newline written first keeps it from swallowing this record.
    with open(path, "a+b") as f:
        end = f.seek(0, 2)
        f.seek(max(end - 1, 0))
        torn = end > 0 and f.read(1) != b"\n"
        f.write((("\n" if torn else "") + json.dumps(record) + "\n").encode())


def collect(models: Sequence[Path], out_dir: str | Path, trials_per_task: int = 32, cost_model: str = "xgb",
            target: str = "llvm", threads: int = 0, seed: int = 0, input_shapes: dict | None = None,
            progress: Callable[[str], None] | None = None) -> list[NetworkRecord]:
    """Collect ``trials_per_task`` measured schedules of every task of ``models`` into ``out_dir``;
    returns the networks collected by this call."""
    from narformer_tvm.integrations.cost_models import get_cost_model
    from narformer_tvm.integrations.tvm_env import fast_builder, make_target, meta_schedule
    from narformer_tvm.integrations.tvm_tuning import task_best, tune_task
    from narformer_tvm.measure.backends import MeasureConfig
    from narformer_tvm.measure.profiler import check_config

    if cost_model not in COST_MODELS:
        raise InputError(f"unknown search guide {cost_model!r}; choose one of {', '.join(COST_MODELS)}")
    if missing := [str(m) for m in models if not Path(m).is_file()]:
        raise InputError(f"no such model file: {', '.join(missing)}", hint="pass ONNX files or folders of them")
    ms = meta_schedule()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = MeasureConfig(runtime="tvm", target=target, threads=threads)
    check_config(cfg)
    tvm_target = make_target(cfg)
    database = ms.database.JSONDatabase(str(out_dir / "database_workload.json"),
                                        str(out_dir / "database_tuning_record.json"))
    builder, runner = fast_builder(), ms.runner.LocalRunner()
    done, tuned, collected = finished(out_dir), _tuned_tasks(out_dir), []
    todo = [Path(m) for m in models if Path(m).stem not in done]
    t_start = time.time()
    for i, path in enumerate(todo):
        rec = NetworkRecord(path.stem, str(path))
        t0 = time.time()
        try:
            tasks = network_tasks(path, tvm_target, input_shapes)
        except Exception as e:  # a network TVM cannot import is data, not the end of the collection
            rec.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            tasks = []
        rec.tasks = len(tasks)
        for k, task in enumerate(tasks):
            workload = ms.utils.shash2hex(task.dispatched[0])
            if tuned.get(workload, 0) >= trials_per_task:
                continue
            have = task_best(database, task.dispatched[0])[0]
            if have >= trials_per_task:  # collected earlier with fewer asked, now holding enough
                tuned[workload] = trials_per_task
                continue
            if progress:
                eta = (time.time() - t_start) / i * (len(todo) - i) if i else None
                progress(f"network {i + 1}/{len(todo)} {path.stem}: task {k + 1}/{len(tasks)} {task.task_name}"
                         + (f", eta {eta / 60:.0f} min" if eta else ""))
            try:
                tune_task(ms, task, tvm_target, trials_per_task - have, seed + k, builder, runner, database,
                          get_cost_model(cost_model), out_dir)
            except Exception as e:  # one task failing never ends the network
                rec.task_errors.append(f"{task.task_name}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
            rec.tasks_collected += 1
            rec.records += task_best(database, task.dispatched[0])[0] - have
            tuned[workload] = trials_per_task
            _append(out_dir / TASKS, {"workload": workload, "task": task.task_name, "trials": trials_per_task})
        rec.seconds = round(time.time() - t0, 1)
        _append(out_dir / NETWORKS, asdict(rec))
        collected.append(rec)
    return collected


def network_tasks(path: Path, tvm_target, input_shapes: dict | None = None) -> list:
    """The MetaSchedule tuning tasks of an ONNX network."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    from narformer_tvm.graph.onnx_graph import load_model
    from narformer_tvm.integrations.tvm_tuning import extract_tasks

    load_model(path, input_shapes)  # our clear error for a bad file, before TVM sees it
    mod = from_onnx(onnx.load(str(path)), shape_dict=input_shapes or None, keep_params_in_input=False)
    return extract_tasks(mod, tvm_target, path)[1]


def shared_tasks(path: str | Path, corpus: Sequence[str | Path], target: str = "llvm",
                 input_shapes: dict | None = None) -> tuple[list[str], int]:
    """(the tasks of network ``path`` that are workloads of the ``corpus`` collections, the network's
    task count): an evaluation network must share none, or the corpus has seen what it is scored on."""
    from narformer_tvm.integrations.tvm_env import make_target, meta_schedule
    from narformer_tvm.measure.backends import MeasureConfig

    seen: set[str] = set()
    for d in corpus:
        if not (Path(d) / TASKS).is_file():
            raise InputError(f"{d}: not a tunedb collection (no {TASKS})", hint="pass `tunedb collect --out` folders")
        seen |= set(_tuned_tasks(Path(d)))
    ms = meta_schedule()
    tasks = network_tasks(Path(path), make_target(MeasureConfig(runtime="tvm", target=target)), input_shapes)
    return [t.task_name for t in tasks if ms.utils.shash2hex(t.dispatched[0]) in seen], len(tasks)


def summary(out_dir: str | Path) -> dict:
    """Networks, tasks (distinct workloads), records and hours of a collection folder."""
    out_dir = Path(out_dir)
    nets = list(finished(out_dir).values())
    workloads = out_dir / "database_workload.json"
    records = out_dir / "database_tuning_record.json"
    return {"networks": len(nets), "failed_networks": sum(1 for n in nets if n["error"]),
            "tasks": sum(1 for line in workloads.read_text().splitlines() if line) if workloads.is_file() else 0,
            "records": sum(1 for line in records.read_text().splitlines() if line) if records.is_file() else 0,
            "hours": round(sum(n["seconds"] for n in nets) / 3600, 3)}
