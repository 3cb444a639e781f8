"""``narformer-tvm tune``: tune an ONNX model's TVM tasks with a chosen cost model, build it, and
compare the tuned network with the untuned build and with ONNX Runtime, timing every phase.

Trials are shared across the tasks by MetaSchedule's task scheduler (``gradient``: by each task's
weight and expected gain, as ``relax_integration.tune_relax`` does), or split evenly with each task
tuned on its own (``per-task``: a failing task is reported and the others go on), or by the gradient
scheduler over the tasks that make up all but a small share of the network's predicted latency
(``share``: weight x the task-latency model's prediction; the rest keep their default schedules and
the warm-up round spends nothing on them). The tuning records
land in a MetaSchedule JSON database in the work dir."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from narformer_tvm.errors import InputError
from narformer_tvm.integrations.tvm_records import median_seconds
from narformer_tvm.measure.backends import MeasureConfig, runs_per_block


POPULATION = 512  # MetaSchedule's evolutionary search: schedules scored per generation
MIN_POPULATION = 16


@dataclass
class TaskResult:
    name: str
    weight: int
    trials: int = 0
    best_us: float | None = None
    error: str | None = None
    seconds: float = 0.0
    predicted_share: float | None = None  # share scheduler: of the network's predicted latency
    default_schedule: bool = False  # share scheduler: left untuned


@dataclass
class TuneReport:
    model: str
    cost_model: str
    tasks: list[TaskResult] = field(default_factory=list)
    untuned_ms: float | None = None
    tuned_ms: float | None = None
    tuning_seconds: float = 0.0
    cost_model_seconds: dict = field(default_factory=dict)
    work_dir: str = ""
    measured: int | None = None  # predict-only: schedules built and run for real (the rest were predicted)
    onnxruntime_ms: float | None = None  # the same model under ONNX Runtime (default session options)
    scheduler: str = "gradient"
    phases: dict = field(default_factory=dict)  # phase -> wall seconds
    curve: list = field(default_factory=list)  # (tuning seconds, estimated network us): sum of weight x best task
    population: int = POPULATION  # the evolutionary search's schedules per generation


SCHEDULERS = ("gradient", "per-task", "share")


class _Phases:
    """Wall time per phase of a tuning run, in order."""

    def __init__(self, report: TuneReport, progress):
        self.report, self.progress = report, progress

    def __call__(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def timed():
            if self.progress:
                self.progress(name)
            t0 = time.time()
            try:
                yield
            finally:
                self.report.phases[name] = self.report.phases.get(name, 0.0) + time.time() - t0
        return timed()


def _time_vm(ex, inputs_np, dev, cfg: MeasureConfig) -> float:
    """Minimum block mean, in ms (time_evaluator gives one mean per block)."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(ex, dev)
    inputs = [tvm.runtime.tensor(a, dev) for a in inputs_np]
    probe = vm.time_evaluator("main", dev, number=1, repeat=3)(*inputs)
    n = runs_per_block(min(probe.results), cfg)
    res = vm.time_evaluator("main", dev, number=n, repeat=cfg.blocks)(*inputs)
    return 1e3 * min(res.results)


def _measure_onnxruntime(path: Path, cfg: MeasureConfig, input_shapes: dict | None) -> float | None:
    from narformer_tvm.measure.backends import get_backend

    ort_cfg = MeasureConfig(runtime="onnxruntime", target=cfg.target, threads=cfg.threads)
    backend = get_backend("onnxruntime")
    if backend.check(ort_cfg):  # e.g. no CUDA provider in this onnxruntime
        return None
    m = backend.measure(str(path), ort_cfg, input_shapes, None)
    return m.latency_ms if m.ok else None


def tune_onnx(path: str | Path, work_dir: str | Path, trials: int = 64, cost_model: str = "narformer",
              threads: int = 0, input_shapes: dict | None = None, seed: int = 0, cost_model_kwargs: dict | None = None,
              progress: Callable[[str], None] | None = None, predict_only: bool = False,
              measure_top_n: int = 4, target: str = "llvm", scheduler: str = "gradient",
              compare_onnxruntime: bool = True, task_latency: str | Path | None = None,
              drop_share: float = 0.01, population: int = POPULATION) -> TuneReport:
    """Tune every task of an ONNX model for ``target`` within ``trials`` in all. ``predict_only``:
    explore with the (pre-trained, frozen) cost model's predictions in place of builds and runs, then
    measure the ``measure_top_n`` best predicted schedules of each task for real. ``scheduler="share"``
    weighs the tasks with the ``task_latency`` model (``tunedb task-latency``) and tunes those that make
    up all but ``drop_share`` of the predicted network latency. ``population``: schedules the evolutionary
    search scores per generation (the cost model's work per round)."""
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from narformer_tvm.graph.onnx_graph import load_model
    from narformer_tvm.integrations.cost_models import get_cost_model
    from narformer_tvm.integrations.tvm_env import (
        fast_builder,
        make_target,
        meta_schedule,
        random_inputs,
    )
    from narformer_tvm.integrations.tvm_records import predict_only as predict_only_pair
    from narformer_tvm.measure.profiler import check_config

    if scheduler not in SCHEDULERS:
        raise InputError(f"unknown task scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    if population < MIN_POPULATION:
        raise InputError(f"a search population of {population} is too small to evolve schedules from",
                         hint=f"pass --population {MIN_POPULATION} or more (MetaSchedule's default is {POPULATION})")
    if predict_only and cost_model != "narformer":
        raise InputError("predict-only tuning uses the narformer cost model", hint="pass --cost-model narformer")
    latency_model = _task_latency_model(task_latency, target) if scheduler == "share" else None
    ms = meta_schedule()
    path, work_dir = Path(path), Path(work_dir)
    load_model(path, input_shapes)  # validates the file with our clear errors before TVM sees it
    cfg = MeasureConfig(runtime="tvm", target=target, threads=threads)
    check_config(cfg)  # e.g. --target cuda without a GPU: refused here, not deep inside TVM
    work_dir.mkdir(parents=True, exist_ok=True)
    tvm_target = make_target(cfg)
    report = TuneReport(str(path), cost_model, work_dir=str(work_dir), scheduler=scheduler, population=population)
    phase = _Phases(report, progress)
    with phase("import"):
        model = onnx.load(str(path))
        mod = from_onnx(model, shape_dict=input_shapes or None, keep_params_in_input=False)  # weights as constants
        inputs = random_inputs(model, input_shapes, seed=seed)
    dev = tvm.cuda(0) if target == "cuda" else tvm.cpu()
    with phase("untuned build and measure"):
        report.untuned_ms = _time_vm(tvm.compile(mod, target=tvm_target), inputs, dev, cfg)
    if compare_onnxruntime:
        with phase("onnxruntime measure"):
            report.onnxruntime_ms = _measure_onnxruntime(path, cfg, input_shapes)

    with phase("task extraction"):
        mod, tasks = extract_tasks(mod, tvm_target, path)
    database = ms.database.JSONDatabase(str(work_dir / "database_workload.json"),
                                        str(work_dir / "database_tuning_record.json"))
    kwargs = dict(cost_model_kwargs or {}, **({"seed": seed} if cost_model == "narformer" else {}))
    cm = get_cost_model(cost_model, **kwargs)
    if not hasattr(cm, "seconds"):  # a built-in: time it, for the cost model's share of tuning time
        from narformer_tvm.integrations.timed_cost_model import TimedCostModel

        cm = TimedCostModel(cm)
    builder, runner = predict_only_pair(cm) if predict_only else (fast_builder(), ms.runner.LocalRunner())
    report.measured = 0 if predict_only else None
    t_start = time.time()
    kept, shares = list(range(len(tasks))), None
    if scheduler == "share":
        with phase("task weighing"):
            kept, shares = _weigh_tasks(ms, tasks, tvm_target, latency_model, drop_share)
    tuning_tasks = [tasks[i] for i in kept]
    if scheduler in ("gradient", "share"):
        with phase("tuning"):
            _tune_jointly(ms, tuning_tasks, tvm_target, trials, seed, builder, runner, database, cm, work_dir,
                          predict_only, measure_top_n, report, population)
    else:
        with phase("tuning"):
            _tune_each(ms, tasks, tvm_target, trials, seed, builder, runner, database, cm, work_dir, predict_only,
                       measure_top_n, report, progress, population)
    report.tuning_seconds = time.time() - t_start
    if not predict_only:
        report.curve = network_curve(work_dir / CURVE, [int(t.weight) for t in tuning_tasks])
    if shares is not None:  # the tasks left to their default schedules, after the tuned ones
        for tr, i in zip(report.tasks, kept):
            tr.predicted_share = float(shares[i])
        report.tasks += [TaskResult(t.task_name, int(t.weight), predicted_share=float(shares[i]),
                                    default_schedule=True) for i, t in enumerate(tasks) if i not in kept]
    report.cost_model_seconds = dict(getattr(cm, "seconds", {}) or {})
    with phase("tuned build"):
        tuned = build_tuned(database, mod, tvm_target)
    with phase("tuned measure"):
        report.tuned_ms = _time_vm(tuned, inputs, dev, cfg)
    if cost_model == "narformer":
        cm.save(str(work_dir / "narformer_cost_model.pt"))
    return report


def measure_tuned(path: str | Path, work_dir: str | Path, threads: int = 0, input_shapes: dict | None = None,
                  seed: int = 0, target: str = "llvm") -> float:
    """Build the ONNX model at ``path`` with the schedules ``tune_onnx`` left in ``work_dir`` and measure it
    (ms), as its tuned build and measure phases do."""
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from narformer_tvm.integrations.tvm_env import make_target, meta_schedule, random_inputs
    from narformer_tvm.integrations.tvm_records import database_files

    ms, cfg = meta_schedule(), MeasureConfig(runtime="tvm", target=target, threads=threads)
    tvm_target = make_target(cfg)
    model = onnx.load(str(path))
    mod, _ = extract_tasks(from_onnx(model, shape_dict=input_shapes or None, keep_params_in_input=False),
                           tvm_target, path)
    wl, tr = database_files(work_dir)
    tuned = build_tuned(ms.database.JSONDatabase(str(wl), str(tr), allow_missing=False), mod, tvm_target)
    dev = tvm.cuda(0) if target == "cuda" else tvm.cpu()
    return _time_vm(tuned, random_inputs(model, input_shapes, seed=seed), dev, cfg)


def build_tuned(database, mod, tvm_target):
    """``mod`` (as ``extract_tasks`` returns it) built with the schedules in ``database``."""
    import tvm

    from narformer_tvm.integrations.tvm_env import meta_schedule

    with tvm_target, tvm.transform.PassContext(opt_level=3):
        return meta_schedule().relax_integration.compile_relax(database, mod, tvm_target, params=None)


def extract_tasks(mod, tvm_target, path: str | Path):
    """(the Relax module to build with the tuned schedules, its MetaSchedule tuning tasks), prepared as
    relax's static_shape_tuning pipeline does; ``path`` names the model in the error when there is
    nothing to tune. The module returned is the one before fusion: ``compile_relax`` legalises and
    fuses again, and a second pass over fused functions annotates them (``op_pattern``), so that no
    tuned record would match them and the build would keep default schedules."""
    import tvm
    from tvm import relax

    from narformer_tvm.integrations.tvm_env import meta_schedule

    with tvm_target:
        mod = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                        relax.transform.CanonicalizeBindings()])(mod)
        tasks = meta_schedule().relax_integration.extract_tasks(relax.get_pipeline("zero")(mod), tvm_target)
    if not tasks:
        raise InputError(f"{path}: TVM extracted no tunable tasks")
    return mod, tasks


def evolutionary_search(ms, population: int = POPULATION):
    """MetaSchedule's evolutionary search scoring ``population`` schedules per generation (its own
    default object when the population is its default)."""
    if population == POPULATION:
        return "evolutionary"
    return ms.search_strategy.EvolutionarySearch(population_size=population,
                                                 init_min_unmeasured=min(50, population))


def task_context(ms, task, target, rand_state: int, population: int = POPULATION):
    """MetaSchedule's default search over one extracted task: post-order-apply space, evolutionary
    (``population`` schedules scored per generation)."""
    return ms.TuneContext(mod=task.dispatched[0], target=target, space_generator="post-order-apply",
                          search_strategy=evolutionary_search(ms, population), task_name=task.task_name,
                          num_threads="physical", rand_state=rand_state)


def tune_task(ms, task, target, trials: int, rand_state: int, builder, runner, database, cm, work_dir: Path,
              callbacks: list | None = None, population: int = POPULATION) -> None:
    """``trials`` measured (or predicted) schedules of one task into ``database``."""
    ms.tune_tasks(tasks=[task_context(ms, task, target, rand_state, population)], task_weights=[1.0],
                  work_dir=str(Path(work_dir) / "logs"), max_trials_global=trials, max_trials_per_task=trials,
                  num_trials_per_iter=min(64, trials), builder=builder, runner=runner, database=database,
                  cost_model=cm, task_scheduler="round-robin",
                  measure_callbacks=list(ms.measure_callback.MeasureCallback.create("default")) + (callbacks or []))


CURVE = "tuning_curve.jsonl"  # one line per measured batch: seconds into tuning, task index, run times (us)


def curve_recorder(ms, path: Path, start: float, task_offset: int = 0):
    """A measure callback appending each measured batch to ``path`` (the tuning curve over wall time)."""
    import json

    from tvm.ir.utils import derived_object

    @derived_object
    class CurveRecorder(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            secs = [median_seconds(r.run_secs, r.error_msg) for r in runner_results]
            us = [1e6 * s if math.isfinite(s) else None for s in secs]
            with open(path, "a") as f:
                f.write(json.dumps({"s": round(time.time() - start, 3), "task": task_offset + int(task_id),
                                    "us": us}) + "\n")

    return CurveRecorder()


def network_curve(path: Path, weights: list[int]) -> list[tuple[float, float]]:
    """(seconds, estimated network latency in us) after each measured batch once every task has a working
    schedule: the sum over tasks of weight x best latency so far, the estimate MetaSchedule's gradient
    scheduler works with. A task without a working schedule by the end of the run (the scheduler never
    measured it, or every run of it failed) is left out: it keeps its default schedule whatever the cost
    model, so it would only hold the curve back."""
    import json

    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by an interrupted run
            continue
    ever = {r["task"] for r in rows if any(u is not None for u in r["us"])} & set(range(len(weights)))
    best: dict[int, float] = {}
    out = []
    for r in rows:
        ok = [u for u in r["us"] if u is not None]
        if ok and r["task"] in ever:
            best[r["task"]] = min(best.get(r["task"], float("inf")), min(ok))
        if ever and len(best) == len(ever):
            out.append((r["s"], sum(weights[k] * b for k, b in best.items())))
    return out


def time_to_reach(curve: list[tuple[float, float]], latency_us: float) -> float | None:
    """Tuning seconds until the estimated network latency is at or below ``latency_us``."""
    return next((s for s, us in curve if us <= latency_us * 1.0001), None)


def task_best(database, mod) -> tuple[int, float | None]:
    """(records, best median run time in us) of one task in ``database``."""
    recs = database.get_top_k(database.commit_workload(mod), 10_000)
    best = [r for r in recs if r.run_secs]
    return len(recs), (1e6 * median_seconds(best[0].run_secs) if best else None)


def _tune_jointly(ms, tasks, target, trials, seed, builder, runner, database, cm, work_dir, predict_only,
                  measure_top_n, report, population) -> None:
    from narformer_tvm.integrations.tvm_records import measure_top

    ctxs = [task_context(ms, t, target, seed + k, population) for k, t in enumerate(tasks)]
    # small rounds, so that a few dozen trials still reach every task once before the scheduler weighs them
    per_iter = max(1, min(64, trials // (2 * len(tasks)) or 1))
    explored = ms.database.MemoryDatabase() if predict_only else database
    t0 = time.time()
    (work_dir / CURVE).unlink(missing_ok=True)
    callbacks = list(ms.measure_callback.MeasureCallback.create("default")) + \
        ([] if predict_only else [curve_recorder(ms, work_dir / CURVE, t0)])
    error = None
    try:
        ms.tune_tasks(tasks=ctxs, task_weights=[float(t.weight) for t in tasks], work_dir=str(work_dir / "logs"),
                      max_trials_global=trials, num_trials_per_iter=per_iter, builder=builder, runner=runner,
                      database=explored, cost_model=cm, task_scheduler="gradient", measure_callbacks=callbacks)
    except Exception as e:  # what was measured before stays in the database and is still used
        error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    if predict_only:
        report.measured = measure_top(explored, database, target, measure_top_n)
    for t in tasks:
        tr = TaskResult(t.task_name, int(t.weight), error=error)
        tr.trials = task_best(explored, t.dispatched[0])[0]
        tr.best_us = task_best(database, t.dispatched[0])[1]
        report.tasks.append(tr)
    spent = time.time() - t0  # the scheduler interleaves tasks: their time in proportion to trials
    total = sum(tr.trials for tr in report.tasks) or 1
    for tr in report.tasks:
        tr.seconds = spent * tr.trials / total


def _task_latency_model(path, target: str):
    from narformer_tvm.integrations.tvm_task_latency import TaskLatencyModel

    if target != "llvm":  # a GPU kernel left without a schedule has no thread binding and does not build
        raise InputError("the share scheduler leaves tasks unscheduled, which only a CPU target builds",
                         hint="use --scheduler gradient for --target cuda")
    if path is None:
        raise InputError("the share scheduler needs a task-latency model and this machine's profile ships none",
                         hint="fit one with `narformer-tvm tunedb task-latency CORPUS --out FILE`, pass --task-latency")
    return TaskLatencyModel.load(path)


def _weigh_tasks(ms, tasks, target, model, drop_share: float) -> tuple[list[int], np.ndarray]:
    """(indices of the tasks to tune, each task's share of the predicted network latency)."""
    from narformer_tvm.integrations.tvm_task_latency import design_space_features, heavy_tasks

    seconds = model.predict(np.stack([design_space_features(ms, t.dispatched[0], target) for t in tasks]))
    latency = np.array([float(t.weight) for t in tasks]) * seconds
    shares = latency / latency.sum()
    return heavy_tasks(shares, drop_share), shares


def _tune_each(ms, tasks, target, trials, seed, builder, runner, database, cm, work_dir, predict_only,
               measure_top_n, report, progress, population) -> None:
    from narformer_tvm.integrations.tvm_records import measure_top

    per_task = max(1, trials // len(tasks))
    start = time.time()
    (work_dir / CURVE).unlink(missing_ok=True)
    for k, task in enumerate(tasks):
        tr = TaskResult(task.task_name, int(task.weight))
        if progress:
            progress(f"task {k + 1}/{len(tasks)} {task.task_name} ({per_task} trials)")
        t0 = time.time()
        try:
            explored = ms.database.MemoryDatabase() if predict_only else database
            tune_task(ms, task, target, per_task, seed + k, builder, runner, explored, cm, work_dir,
                      None if predict_only else [curve_recorder(ms, work_dir / CURVE, start, task_offset=k)],
                      population)
            if predict_only:
                report.measured += measure_top(explored, database, target, measure_top_n)
            tr.trials = task_best(explored, task.dispatched[0])[0]
            tr.best_us = task_best(database, task.dispatched[0])[1]
        except Exception as e:  # one task failing never kills the run
            tr.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        tr.seconds = time.time() - t0
        report.tasks.append(tr)
