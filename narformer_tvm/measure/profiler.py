"""The profiler: measure real latencies of ONNX models and store them as a training set.

Each model is measured in an isolated worker process (zoo variants exported by another, see
measure.exporter) with a timeout: a crash or hang inside a runtime becomes a failed measurement and
the sweep goes on.
Every result is committed as soon as it exists, so Ctrl-C or a kill loses nothing, and running the
same command again resumes without measuring a finished model twice.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from narformer_tvm.data.store import Store, file_key
from narformer_tvm.errors import InputError, NarformerError
from narformer_tvm.measure.backends import (
    MeasureConfig,
    Measurement,
    fingerprint,
    get_backend,
)
from narformer_tvm.measure.exporter import Exporter
from narformer_tvm.measure.regime_gate import PROBE, RegimeGate, slow_in_hindsight
from narformer_tvm.measure.worker import Worker

SPREAD_LIMIT = 0.15  # block medians differing by more than this: re-measure


CONTENTION_LIMIT = 0.25  # other processes using more than this share of the CPUs: re-measure


MAX_CONSECUTIVE_CRASHES = 5  # a worker that dies on everything is a broken set-up, not bad models


REFERENCE = {"family": "resnet", "seed": -2, "index": 0,
             "raw": {"block": "basic", "d1": 1, "d2": 1, "d3": 1, "d4": 1, "width": 32, "kernel": 3, "se": 0.0,
                     "resolution": 96, "batch": 1}}  # a small fixed network re-measured to detect drift
DRIFT_LIMIT = 0.10  # the reference network this far from its first measurement: reported as drift


@dataclass
class Job:
    """One model to measure: an ONNX file, or a zoo variant exported inside the worker."""

    key: str
    name: str
    family: str | None = None
    onnx_path: str | None = None
    variant: dict | None = None  # zoo.Variant.to_dict()
    transform: str | None = None  # a model variant made by a real tool before measuring (tune_ort.VARIANTS)
    config: dict | None = None  # MeasureConfig fields that differ from the sweep's (session options)

    @property
    def source(self) -> dict:
        src = self.variant if self.variant else {"path": self.onnx_path}
        return {**src, "transform": self.transform} if self.transform else src

    def with_candidate(self, transform: str | None, config: dict | None) -> "Job":
        """The same model, transformed and measured under other session options (its own dataset row)."""
        key = self.key if not transform else f"{self.key}:{transform}"
        name = self.name if not transform else f"{self.name}:{transform}"
        return Job(key, name, self.family, self.onnx_path, self.variant, transform, config)


def jobs_from_paths(paths: Iterable[Path], input_shapes: dict | None = None, batch_size: int | None = None) -> list[Job]:
    jobs = []
    for p in paths:
        if not p.is_file():
            raise InputError(f"{p}: no such file", hint="pass .onnx files or folders of them")
        jobs.append(Job(key=file_key(p, input_shapes, batch_size), name=p.stem, onnx_path=str(p.resolve())))
    return jobs


def jobs_from_zoo(families: list[str], count: int, seed: int) -> list[Job]:
    """Zoo variants, interleaved across families so that a partial sweep covers every family."""
    from narformer_tvm.measure.zoo import variants

    per_family = [[Job(key=v.key, name=v.name, family=v.family, variant=v.to_dict()) for v in variants(fam, seed, count)]
                  for fam in families]
    return [fam_jobs[i] for i in range(count) for fam_jobs in per_family if i < len(fam_jobs)]


def _cpu_busy() -> tuple[float, float]:
    """(system-wide busy CPU seconds, this process's CPU seconds)."""
    import psutil

    t = psutil.cpu_times()
    busy = t.user + t.system + getattr(t, "nice", 0) + getattr(t, "irq", 0) + getattr(t, "softirq", 0)
    p = psutil.Process().cpu_times()
    return busy, p.user + p.system


def measure_with_retries(backend, path: str, cfg: MeasureConfig, input_shapes, batch_size: int,
                         tries: int, gate: RegimeGate | None = None) -> tuple[Measurement, float, int]:
    """Measure; while the block spread or the CPU contention is high, or the machine left its fast
    regime during the measurement, measure again (keep the best)."""
    import psutil

    ncpu = psutil.cpu_count() or 1
    best: tuple[tuple, Measurement, float] | None = None
    for attempt in range(1, tries + 1):
        before = gate.wait_fast() if gate else None
        busy0, own0, t0 = *_cpu_busy(), time.perf_counter()
        m = backend.measure(path, cfg, input_shapes, batch_size)
        busy1, own1, t1 = *_cpu_busy(), time.perf_counter()
        other = max(0.0, (busy1 - busy0) - (own1 - own0)) / max(1e-6, (t1 - t0) * ncpu)
        if not m.ok:
            return m, other, attempt
        slow = False
        if gate:
            after = gate.probe()
            slow = not (gate.is_fast(before) and gate.is_fast(after))
            m.info.update(probe_ms=[round(before, 4), round(after, 4)], probe_fast_ms=round(gate.fast_ms, 4),
                          regime="slow" if slow else "fast")
        rank = (slow, m.spread, other)
        if best is None or rank < best[0]:
            best = (rank, m, other)
        if not slow and m.spread <= SPREAD_LIMIT and other <= CONTENTION_LIMIT:
            break
    return best[1], best[2], attempt


def run_job(task: dict, gate: RegimeGate | None = None, made: dict | None = None, made_dir: Path | None = None) -> dict:
    """Inside the worker: export (zoo), extract the graph, measure. Never raises.

    ``made`` (with ``made_dir``) keeps the files and graphs made for the last model, so that the same
    model under many session options (tune-ort's candidates) is exported and quantised once."""
    from narformer_tvm.graph.tokens import table

    job, cfg = Job(**task["job"]), MeasureConfig(**task["cfg"])
    out: dict = {}
    model_ident = json.dumps([job.onnx_path, job.variant, task.get("input_shapes"), task.get("batch_size")],
                             sort_keys=True, default=str)
    if made is not None and made.get("model") != model_ident:
        made.clear()
        made["model"] = model_ident
    with tempfile.TemporaryDirectory() as tmp:
        folder = made_dir if made is not None and made_dir is not None else Path(tmp)
        try:
            if made is not None and job.transform in made:
                path, g = made[job.transform]
            else:
                path, g = _make_job_model(job, task, folder)
                if made is not None:
                    made[job.transform] = (path, g)
            if task.get("need_graph", True):
                out["graph"] = table(g).to_bytes()
                out["stats"] = {"macs": g.macs, "flops": g.flops, "params": g.params, "memory": g.memory,
                                "batch_size": g.batch_size}
            backend = get_backend(cfg.runtime)
            m, contention, tries = measure_with_retries(backend, path, cfg, task.get("input_shapes"), g.batch_size,
                                                        task.get("tries", 3), gate)
            out.update(measurement=asdict(m), contention=contention, tries=tries)
        except NarformerError as e:
            out["measurement"] = asdict(Measurement(error=f"{type(e).__name__}: {e.message}"))
        except Exception as e:  # export or graph failures are data too
            out["measurement"] = asdict(Measurement(error=f"{type(e).__name__}: {str(e)[:500]}"))
    return out


def _make_job_model(job: Job, task: dict, folder: Path):
    """The file a job runs (transformed) and the graph its row records. Zoo variants arrive exported
    (by measure.exporter: this process runs no torch export)."""
    from narformer_tvm.graph.onnx_graph import build_graph

    path = job.onnx_path
    graph_path = path
    if job.transform:
        from narformer_tvm.measure.ort_variants import graph_source, make_variant

        source = path
        path = str(make_variant(source, job.transform, folder / f"variant.{job.transform}.onnx",
                                task.get("input_shapes"), task.get("batch_size")))
        graph_path = graph_source(source, path, job.transform)
    return path, build_graph(graph_path, task.get("input_shapes"), task.get("batch_size"), name=job.name)


def _worker_main(conn) -> None:
    import signal
    import warnings

    # Ctrl-C reaches the whole process group: the sweep stops the worker itself, and a traceback from
    # the worker would bury the sweep's "interrupted" message.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    warnings.filterwarnings("ignore")
    from narformer_tvm.graph import onnx_graph, tokens  # noqa: F401  (pay the imports before the first timed task)

    conn.send("ready")
    gate: RegimeGate | None = None  # a worker serves one sweep; its probe runs under the sweep's configuration
    made: dict = {}  # the last model's files and graphs (run_job)
    with tempfile.TemporaryDirectory() as tmp:
        made_dir = Path(tmp) / "made"
        made_dir.mkdir()
        while True:
            task = conn.recv()
            if task is None:
                return
            if task.get("gate") and gate is None:  # {"calibrate_s", "wait_s", "known_fast_ms"}: made on first use
                cfg = MeasureConfig(**(task.get("gate_cfg") or task["cfg"]))  # probed as the sweep is configured
                try:
                    gate = RegimeGate(get_backend(cfg.runtime), cfg, Path(tmp), **task["gate"])
                except Exception as e:  # a gate that cannot probe fails this model, as data
                    conn.send({"measurement": asdict(Measurement(error=f"regime gate: {e}"))})
                    continue
            conn.send(run_job(task, gate if task.get("gate") else None, made, made_dir))


@dataclass
class Summary:
    measured: int = 0
    failed: int = 0
    skipped: int = 0
    noisy: int = 0
    retried: int = 0
    drift: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    left: int = 0  # jobs not started because the deadline came
    warm_up_s: float = 0.0  # spent loading the machine before the first job


def check_config(cfg: MeasureConfig) -> None:
    """Fail fast, before any sweep, when the runtime cannot measure this target here."""
    backend = get_backend(cfg.runtime)
    why = backend.check(cfg)
    if why:
        raise InputError(why)


def sweep(jobs: list[Job], store: Store, cfg: MeasureConfig, pass_: str = "main", timeout: float = 300.0,
          input_shapes: dict | None = None, batch_size: int | None = None, retry_failed: bool = False,
          reference_every: int = 50, tries: int = 3, remeasure_noisy: bool = False,
          progress: Callable[[str, int, int, str], None] | None = None, gate: dict | None = None,
          summary: Summary | None = None, deadline: float | None = None, warm_up_s: float = 0.0) -> Summary:
    """Measure every job not yet in ``store`` for this configuration and pass.

    ``gate`` ({"calibrate_s", "wait_s"}, see RegimeGate) measures only in the machine's fast regime
    (every job on the sweep's runtime and target, whatever its session options); rows measured outside
    it are flagged noisy. A ``summary`` given by the
    caller is filled as the sweep goes, so it still counts what was done when the sweep is interrupted.
    ``deadline`` (a time.time()): start no job after it but the first (a slow start must not leave a rerun
    with nothing measured); the rest is left for the next sweep.
    ``warm_up_s``: keep the machine busy that long before the first job (progress kind "warm-up"), for
    machines whose speed settles only under sustained load."""
    check_config(cfg)
    backend = get_backend(cfg.runtime)
    config_ids: dict[str, int] = {}

    def config_of(job: Job) -> tuple[MeasureConfig, int]:  # jobs may carry their own session options
        jc = job_config(cfg, job)
        ident = json.dumps(jc.identity(), sort_keys=True)
        if ident not in config_ids:
            config_ids[ident] = store.config_id(jc.identity(), fingerprint(jc, backend))
        return jc, config_ids[ident]

    config_id = store.config_id(cfg.identity(), fingerprint(cfg, backend))
    todo = [(j, *config_of(j)) for j in jobs]
    todo = [(j, jc, cid) for j, jc, cid in todo
            if not store.has_measurement(j.key, cid, pass_, retry_failed, remeasure_noisy)]
    summary = summary if summary is not None else Summary()
    summary.skipped = len(jobs) - len(todo)
    if not todo:
        return summary
    worker, exporter = Worker(_worker_main), Exporter()
    t_start = time.time()
    crashes = 0
    ref_first = _reference_baseline(store, config_id)
    if gate:  # the gate's fast level from the start, not only once it sees it
        gate = {**gate, "known_fast_ms": store.probe_reference(config_id)}
    gated: list[tuple[int, float, float, bool]] = []  # (row, slowest probe, fast level then, noisy)
    try:
        if warm_up_s > 0:
            _warm_up(worker, exporter, cfg, warm_up_s, timeout, progress)
            summary.warm_up_s = time.time() - t_start
        for i, (job, jcfg, job_config_id) in enumerate(todo):
            if deadline is not None and i and time.time() >= deadline:  # the first job always: every sweep moves on
                summary.left = len(todo) - i
                break
            if reference_every and i % reference_every == 0:
                ref_first = _measure_reference(worker, exporter, store, cfg, config_id, ref_first, timeout, summary)
            if progress:
                progress("start", i, len(todo), job.name)
            t0 = time.time()
            if gate and "probe_path" not in gate:  # on first use, within the job's time (and the deadline)
                gate["probe_path"] = exporter.export(PROBE, timeout, keep=True)[0]  # None: the worker tries
            task = {"cfg": jcfg.to_dict(), "input_shapes": input_shapes, "batch_size": batch_size,
                    "need_graph": store.model_id(job.key) is None, "tries": tries,
                    "gate": gate if _same_machine_regime(jcfg, cfg) else None, "gate_cfg": cfg.to_dict()}
            result = _call(worker, exporter, job, task, timeout)
            m = Measurement(**result["measurement"])
            crashes = crashes + 1 if (m.error or "").startswith("worker crashed") else 0
            if crashes >= MAX_CONSECUTIVE_CRASHES:
                raise NarformerError(f"the measuring worker crashed {crashes} times in a row (last: {m.error}); "
                                     "stopping the sweep", hint="fix the runtime, then rerun with --retry-failed")
            if "graph" in result:
                from narformer_tvm.graph.tokens import GraphTable

                store.add_model(job.key, job.name, GraphTable.from_bytes(result["graph"]), result["stats"],
                                family=job.family, source=job.source, onnx_path=job.onnx_path)
            model_id = store.model_id(job.key)
            if model_id is None:  # the graph could not be extracted: keep the failure as a row anyway
                from narformer_tvm.graph.tokens import GraphTable

                model_id = store.add_model(job.key, job.name, GraphTable.empty(), {}, family=job.family,
                                           source=job.source, onnx_path=job.onnx_path)
            contention = result.get("contention")
            noisy = bool(m.ok and (m.spread > SPREAD_LIMIT or (contention or 0) > CONTENTION_LIMIT
                                   or m.info.get("regime") == "slow"))
            row_id = store.add_measurement(model_id, job_config_id, m, pass_, contention, noisy, jcfg.to_dict(),
                                           time.time() - t0)
            if m.ok and "probe_ms" in m.info:
                gated.append((row_id, max(m.info["probe_ms"]), m.info["probe_fast_ms"], noisy))
            summary.measured += m.ok
            summary.failed += not m.ok
            summary.noisy += noisy
            summary.retried += result.get("tries", 1) > 1
            if not m.ok:
                summary.failures.append((job.name, m.error or ""))
            if progress:
                status = f"{m.latency_ms:.3f} ms" if m.ok else "failed"
                progress("done", i + 1, len(todo), f"{job.name}: {status}")
        if reference_every:
            _measure_reference(worker, exporter, store, cfg, config_id, ref_first, timeout, summary)
    finally:
        worker.close()
        exporter.close()
        late = slow_in_hindsight(gated)
        store.flag_noisy(late)
        summary.noisy += len(late)
        summary.seconds = time.time() - t_start
    return summary


def _same_machine_regime(job_cfg: MeasureConfig, cfg: MeasureConfig) -> bool:
    """Whether the sweep's regime probe speaks for a job: the regime is the CPU's, so every CPU
    ONNX Runtime configuration of the sweep (other session options, other variants) is gated."""
    return (job_cfg.runtime, job_cfg.target, job_cfg.rpc_tracker) == (cfg.runtime, cfg.target, cfg.rpc_tracker)


def job_config(cfg: MeasureConfig, job: Job) -> MeasureConfig:
    """The configuration a job is measured under: the sweep's, with the job's own overrides."""
    return replace(cfg, **job.config) if job.config else cfg


def job_result(store: Store, job: Job, cfg: MeasureConfig, pass_: str = "main") -> dict | None:
    """The stored measurement of ``job`` under ``cfg`` (after a sweep): latency_ms, error, noisy."""
    jc = job_config(cfg, job)
    cid = store.config_id(jc.identity(), fingerprint(jc, get_backend(jc.runtime)))
    row = store.db.execute("SELECT m.latency_ms, m.error, m.noisy FROM measurements m JOIN models d ON d.id = m.model_id "
                           "WHERE d.key=? AND m.config_id=? AND m.pass=?", (job.key, cid, pass_)).fetchone()
    return {"latency_ms": row[0], "error": row[1], "noisy": bool(row[2])} if row else None


def _reference_baseline(store: Store, config_id: int) -> float | None:
    row = store.db.execute("SELECT latency_ms FROM reference WHERE config_id=? AND latency_ms IS NOT NULL "
                           "ORDER BY id LIMIT 1", (config_id,)).fetchone()
    return row[0] if row else None


def _call(worker: Worker, exporter: Exporter, job: Job, task: dict, timeout: float) -> dict:
    """The worker's result for ``job`` (a zoo variant exported first by ``exporter``) under ``task``'s
    settings; a failed export is the result."""
    if job.variant and not job.onnx_path:
        path, failure = exporter.export(job.variant, timeout)
        if failure is not None:
            return failure
        job = replace(job, onnx_path=path)
    return worker.call({**task, "job": asdict(job)}, timeout)


def _reference_job() -> Job:
    from narformer_tvm.measure.zoo import Variant

    v = Variant(**REFERENCE)
    return Job(key=v.key, name="reference", family=v.family, variant=v.to_dict())


def _warm_up(worker: Worker, exporter: Exporter, cfg: MeasureConfig, seconds: float, timeout: float,
             progress: Callable[[str, int, int, str], None] | None) -> None:
    """Run the reference network under ``cfg`` for ``seconds``, measuring nothing that is kept."""
    busy = replace(cfg, blocks=50, max_runs=10**6)  # ~10 s a call: few session starts, the runtime busy throughout
    job, task = _reference_job(), {"cfg": busy.to_dict(), "need_graph": False, "tries": 1}
    t0 = time.time()
    while (spent := time.time() - t0) < seconds:
        if progress:
            progress("warm-up", int(spent), int(seconds), "loading the machine before measuring")
        _call(worker, exporter, job, task, timeout)
    if progress:
        progress("warm-up", int(seconds), int(seconds), "done")


def _measure_reference(worker: Worker, exporter: Exporter, store: Store, cfg: MeasureConfig, config_id: int,
                       first: float | None, timeout: float, summary: Summary) -> float | None:
    result = _call(worker, exporter, _reference_job(), {"cfg": cfg.to_dict(), "need_graph": False, "tries": 3}, timeout)
    m = Measurement(**result["measurement"])
    store.add_reference(config_id, m.latency_ms, m.spread)
    if m.ok and first is not None and abs(m.latency_ms / first - 1) > DRIFT_LIMIT:
        summary.drift.append(f"reference model {m.latency_ms:.3f} ms vs {first:.3f} ms at the first check "
                             f"({100 * (m.latency_ms / first - 1):+.0f}%): the machine drifted or is contended")
    return first if first is not None else m.latency_ms


def repeat_subset(jobs: list[Job], fraction: float) -> list[Job]:
    """A deterministic, evenly spread subset for the noise-floor pass."""
    if fraction <= 0:
        return []
    step = max(1, round(1 / fraction))
    return jobs[::step]


def env_threads_note() -> str:
    """Variables that silently change thread counts and would make rows incomparable."""
    keys = [k for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS") if os.environ.get(k)]
    return ", ".join(f"{k}={os.environ[k]}" for k in keys)
