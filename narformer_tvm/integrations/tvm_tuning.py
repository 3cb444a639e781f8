"""``narformer-tvm tune``: tune an ONNX model's TVM tasks with a chosen cost model, build it, and
compare tuned with untuned latency. Each task is tuned on its own, so a failing task is reported
and the others go on; the tuning records land in a MetaSchedule JSON database in the work dir."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from narformer_tvm.errors import InputError
from narformer_tvm.measure.backends import MeasureConfig, runs_per_block


@dataclass
class TaskResult:
    name: str
    weight: int
    trials: int = 0
    best_us: float | None = None
    error: str | None = None
    seconds: float = 0.0


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


def tune_onnx(path: str | Path, work_dir: str | Path, trials: int = 64, cost_model: str = "narformer",
              threads: int = 0, input_shapes: dict | None = None, seed: int = 0, cost_model_kwargs: dict | None = None,
              progress: Callable[[str], None] | None = None, predict_only: bool = False,
              measure_top_n: int = 4) -> TuneReport:
    """Tune every task of an ONNX model. ``predict_only``: explore with the (pre-trained, frozen)
    cost model's predictions in place of builds and runs, then measure the ``measure_top_n`` best
    predicted schedules of each task for real."""
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
    from narformer_tvm.integrations.tvm_records import measure_top
    from narformer_tvm.integrations.tvm_records import predict_only as predict_only_pair

    ms = meta_schedule()
    path, work_dir = Path(path), Path(work_dir)
    load_model(path, input_shapes)  # validates the file with our clear errors before TVM sees it
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg = MeasureConfig(runtime="tvm", threads=threads)
    target = make_target(cfg)
    model = onnx.load(str(path))
    mod = from_onnx(model, shape_dict=input_shapes or None, keep_params_in_input=False)  # weights as constants
    report = TuneReport(str(path), cost_model, work_dir=str(work_dir))

    inputs = random_inputs(model, input_shapes, seed=seed)
    dev = tvm.cpu()

    if progress:
        progress("building untuned")
    report.untuned_ms = _time_vm(tvm.compile(mod, target=target), inputs, dev, cfg)

    from tvm import relax

    with target:  # the same preparation as relax's static_shape_tuning pipeline
        mod = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                        relax.transform.CanonicalizeBindings(), relax.get_pipeline("zero")])(mod)
    tasks = ms.relax_integration.extract_tasks(mod, target)
    if not tasks:
        raise InputError(f"{path}: TVM extracted no tunable tasks")
    database = ms.database.JSONDatabase(str(work_dir / "database_workload.json"),
                                        str(work_dir / "database_tuning_record.json"))
    per_task = max(1, trials // len(tasks))
    kwargs = dict(cost_model_kwargs or {}, **({"seed": seed} if cost_model == "narformer" else {}))
    cm = get_cost_model(cost_model, **kwargs)
    if predict_only and cost_model != "narformer":
        raise InputError("predict-only tuning uses the narformer cost model", hint="pass --cost-model narformer")
    builder, runner = predict_only_pair(cm) if predict_only else (fast_builder(), ms.runner.LocalRunner())
    report.measured = 0 if predict_only else None
    t_start = time.time()
    for k, task in enumerate(tasks):
        tr = TaskResult(task.task_name, int(task.weight))
        if progress:
            progress(f"task {k + 1}/{len(tasks)} {task.task_name} ({per_task} trials)")
        t0 = time.time()
        try:
            ctx = ms.TuneContext(mod=task.dispatched[0], target=target, space_generator="post-order-apply",
                                 search_strategy="evolutionary", task_name=task.task_name, num_threads="physical",
                                 rand_state=seed + k)
            explored = ms.database.MemoryDatabase() if predict_only else database
            ms.tune_tasks(tasks=[ctx], task_weights=[1.0], work_dir=str(work_dir / "logs"), max_trials_global=per_task,
                          max_trials_per_task=per_task, num_trials_per_iter=min(64, per_task), builder=builder,
                          runner=runner, database=explored, cost_model=cm, task_scheduler="round-robin")
            if predict_only:
                report.measured += measure_top(explored, database, target, measure_top_n)
            recs = database.get_top_k(database.commit_workload(task.dispatched[0]), 1)
            tr.trials = len(explored.get_top_k(explored.commit_workload(task.dispatched[0]), 10_000))
            if recs and recs[0].run_secs:
                tr.best_us = 1e6 * float(np.median([float(s) for s in recs[0].run_secs]))
        except Exception as e:  # one task failing never kills the run
            tr.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        tr.seconds = time.time() - t0
        report.tasks.append(tr)
    report.tuning_seconds = time.time() - t_start
    report.cost_model_seconds = dict(getattr(cm, "seconds", {}) or {})
    if progress:
        progress("building tuned")
    with target, tvm.transform.PassContext(opt_level=3):
        tuned = ms.relax_integration.compile_relax(database, mod, target, params=None)
    report.tuned_ms = _time_vm(tuned, inputs, dev, cfg)
    if cost_model == "narformer":
        cm.save(str(work_dir / "narformer_cost_model.pt"))
    return report
