"""ONNX Runtime tuning pass: predict every deployment configuration of a model, measure only the best few.

A candidate is a runnable ONNX Runtime set-up: a model variant made by a real tool (the original,
ONNX Runtime's offline-optimised graph, dynamic int8 and static QDQ int8 quantisation from
``onnxruntime.quantization``, fp16 where the CUDA EP benefits) and session options (intra-op
threads, execution mode, graph optimisation level). One predictor reads the variant's graph plus
configuration features and ranks all candidates; the top-k, the uncertain ones that could still
be best, and the default set-up (the reference) are measured in the profiler's isolated worker.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from narformer_tvm.errors import InputError, NarformerError
from narformer_tvm.measure.ort_session import OPT_LEVELS  # noqa: E402
from narformer_tvm.measure.ort_variants import KIND, KINDS, LOSSY, VARIANTS, graph_source, make_variant

MODES = ("sequential", "parallel")


N_CONFIG = 2 + len(OPT_LEVELS) + 1 + len(KINDS)  # width of config_vector()


@dataclass(frozen=True)
class Candidate:
    """One runnable ONNX Runtime configuration of a model."""

    variant: str = "fp32"  # VARIANTS: which model file runs
    threads: int = 0  # intra-op threads; 0 = physical cores
    opt_level: str = "all"  # graph optimisation level at session creation
    execution_mode: str = "sequential"  # sequential | parallel (inter-op thread pool)
    target: str = "llvm"  # llvm (CPU EP) | cuda (CUDA EP) | tensorrt (TensorRT EP)
    inter_threads: int = 0  # parallel mode's inter-op threads; 0 = as many as intra-op threads

    def resolved(self) -> "Candidate":
        from narformer_tvm.measure.hardware import physical_cores

        threads = self.threads or physical_cores()
        inter = (self.inter_threads or threads) if self.execution_mode == "parallel" else 0
        return replace(self, threads=threads, inter_threads=inter)

    @property
    def lossy(self) -> bool:
        return self.variant in LOSSY

    @property
    def label(self) -> str:
        mode = self.execution_mode + (f" inter={self.inter_threads}" if self.inter_threads else "")
        ep = "" if self.target == "llvm" else f" {self.target}"
        return f"{self.variant} threads={self.threads or 'all'} opt={self.opt_level} {mode}{ep}"

    def measure_overrides(self) -> dict:
        """The MeasureConfig fields this candidate sets (the profiler's per-job configuration)."""
        return {"threads": self.threads, "opt_level": self.opt_level, "execution_mode": self.execution_mode,
                "target": self.target, "inter_threads": self.inter_threads}

    def session_options(self) -> dict:
        """What a deployment sets, as JSON: the ``onnxruntime.SessionOptions`` fields and providers."""
        from narformer_tvm.measure.ort_session import PROVIDERS

        c = self.resolved()
        return {"providers": [PROVIDERS[c.target]], "intra_op_num_threads": c.threads,
                "inter_op_num_threads": c.inter_threads if c.execution_mode == "parallel" else 1,
                "execution_mode": f"ORT_{c.execution_mode.upper()}",
                "graph_optimization_level": {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                                             "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}[c.opt_level]}


DEFAULT = Candidate()  # ONNX Runtime's defaults: the reference every speedup is measured against


def is_default(c: Candidate) -> bool:
    return c.resolved() == replace(DEFAULT, target=c.target).resolved()


def search_space(target: str = "llvm", cores: int | None = None, lossy: bool = True,
                 providers: Sequence[str] | None = None) -> list[Candidate]:
    """Every valid candidate for a target; ``lossy``: include the variants that change numerics.

    CPU: variants x intra-op threads {1, cores} x {sequential, parallel with inter-op {2, cores}} x 4
    optimisation levels. CUDA: fp32/optimised (fp16 when lossy) x 4 levels, sequential (the parallel
    executor only overlaps CPU work). TensorRT (only where onnxruntime has its provider): fp32 (it
    builds its own engine from the original graph; int8 there needs its calibration table) x 4 levels.
    Pruned: parallel mode with one inter-op thread (it is the sequential executor)."""
    from narformer_tvm.measure.hardware import physical_cores

    cores = cores or physical_cores()
    keep = (lambda v: True) if lossy else (lambda v: v not in LOSSY)
    if target == "llvm":
        variants = [v for v in ("fp32", "ort-optimized", "int8-dynamic", "int8-dynamic-matmul", "int8-qdq") if keep(v)]
        layouts = [(t, "sequential", 0) for t in sorted({1, cores})]
        # inter-op 0 where it equals the intra-op count: the default's spelling, so that is_default() agrees
        layouts += [(t, "parallel", 0 if i == t else i) for t in sorted({1, cores}) for i in sorted({2, cores})
                    if cores >= 2]
    elif target in ("cuda", "tensorrt"):
        if target == "tensorrt":
            if providers is None:
                import onnxruntime as ort

                providers = ort.get_available_providers()
            if "TensorrtExecutionProvider" not in providers:
                raise InputError("--target tensorrt needs onnxruntime-gpu built with TensorRT",
                                 hint="pip install onnxruntime-gpu on a machine with TensorRT, or use --target cuda")
        variants = ["fp32"] if target == "tensorrt" else [v for v in ("fp32", "ort-optimized", "fp16") if keep(v)]
        layouts = [(cores, "sequential", 0)]
    else:
        raise InputError(f"unknown target {target!r}", hint="use llvm, cuda or tensorrt")
    return [Candidate(v, t, o, m, target, i) for v in variants for t, m, i in layouts for o in OPT_LEVELS]


def config_vector(c: Candidate, cores: int) -> np.ndarray:
    """Configuration features appended to a graph's static features: (N_CONFIG,) float32.
    Inter-op threads are not a feature: on the 2-core machines measured they equal the intra-op count."""
    threads = c.threads or cores
    v = [math.log2(threads), float(threads >= cores)]
    v += [float(c.opt_level == o) for o in OPT_LEVELS]
    v += [float(c.execution_mode == "parallel")]
    v += [float(KIND.get(c.variant, c.variant) == k) for k in KINDS]
    return np.array(v, dtype=np.float32)


def with_config(t, c: Candidate, cores: int):
    """A GraphTable whose static features carry the candidate's configuration."""
    from narformer_tvm.graph.tokens import GraphTable

    return GraphTable(t.ops, t.scalars, t.edges, np.concatenate([t.static, config_vector(c, cores)]), t.name)


def candidate_of(config: dict, source: dict) -> Candidate:
    """The candidate a dataset row was measured under (its configuration + its model's transform)."""
    return Candidate(source.get("transform") or "fp32", int(config.get("threads", 0)), config.get("opt_level", "all"),
                     config.get("execution_mode", "sequential"), config.get("target", "llvm"),
                     int(config.get("inter_threads", 0)))


@dataclass
class Ranked:
    candidate: Candidate
    predicted_ms: float | None = None
    spread: float | None = None  # ensemble std of the prediction, ms
    measured_ms: float | None = None
    error: str | None = None  # the variant could not be made, failed the fidelity check, or failed to run
    reason: str = ""  # why it was measured: top-k | uncertain | default
    model_file: str | None = None  # the file this candidate runs (the original, or the variant made)
    fidelity: dict | None = None  # Fidelity.to_dict() once checked
    noisy: bool = False  # every measurement of it was flagged noisy

    def to_dict(self) -> dict:
        return {**asdict(self), "candidate": asdict(self.candidate), "label": self.candidate.label}


def predict_candidates(model_path: str | Path, predictor, candidates: Sequence[Candidate], work_dir: str | Path,
                       input_shapes: dict | None = None, batch_size: int | None = None,
                       calibration: list | None = None) -> list[Ranked]:
    """Make each variant once, predict every candidate; ranked fastest first (failed variants last).
    Variants that do not apply to the model (int8-dynamic-matmul without MatMuls) are left out."""
    from narformer_tvm.graph.onnx_graph import build_graph
    from narformer_tvm.graph.tokens import encode_table, table
    from narformer_tvm.measure.ort_variants import applies

    cores = int(predictor.metadata.get("cores") or predictor.profile.get("threads") or 1)
    work_dir = Path(work_dir)
    candidates = [c for c in candidates if applies(model_path, c.variant)]
    graphs, files, errors = {}, {}, {}
    for variant in sorted({"fp32"} | {c.variant for c in candidates}, key=VARIANTS.index):
        try:
            path = make_variant(model_path, variant, work_dir / f"model.{variant}.onnx", input_shapes, batch_size,
                                candidates[0].target, calibration)
            graphs[variant] = table(build_graph(graph_source(model_path, path, variant), input_shapes, batch_size))
            files[variant] = str(path)
        except NarformerError:
            raise
        except Exception as e:  # a tool that cannot transform this model: the candidate is out, the rest go on
            errors[variant] = f"{type(e).__name__}: {str(e)[:300]}"
    ok = [c for c in candidates if c.variant in graphs]
    if hasattr(predictor, "predict_configs"):  # a RatioPredictor: the original model's graph and the ratios
        mean, std = predictor.predict_configs(graphs, ok) if ok else (np.zeros(0), np.zeros(0))
    else:
        encoded = [encode_table(with_config(graphs[c.variant], c, cores), predictor.features) for c in ok]
        mean, std = predictor.predict_encoded(encoded) if encoded else (np.zeros(0), np.zeros(0))
    ranked = [Ranked(c, float(m), float(s), model_file=files[c.variant]) for c, m, s in zip(ok, mean, std)]
    ranked.sort(key=lambda r: r.predicted_ms)
    return ranked + [Ranked(c, error=errors[c.variant]) for c in candidates if c.variant in errors]


def choose_to_measure(ranked: Sequence[Ranked], top_k: int = 3, explore: int = 2, z: float = 2.0,
                      accept: Callable[[Ranked], bool] | None = None) -> list[Ranked]:
    """The top-k predictions, then up to ``explore`` uncertain candidates whose optimistic estimate
    (mean - z * spread) beats the best prediction, then the default configuration. ``accept`` (the
    fidelity check) is asked in that order; a candidate it refuses is passed over for the next."""
    accept = accept or (lambda r: True)
    usable = [r for r in ranked if r.predicted_ms is not None]
    chosen = []
    for r in usable:
        if len(chosen) == top_k:
            break
        if accept(r):
            r.reason = "top-k"
            chosen.append(r)
    if chosen:
        best = chosen[0].predicted_ms
        hopeful = sorted((r for r in usable if r not in chosen and r.error is None
                          and r.predicted_ms - z * (r.spread or 0) < best),
                         key=lambda r: r.predicted_ms - z * (r.spread or 0))
        n = 0
        for r in hopeful:
            if n == explore:
                break
            if accept(r):
                r.reason = "uncertain"
                chosen.append(r)
                n += 1
    for r in ranked:
        if is_default(r.candidate) and r not in chosen:
            r.reason = "default"  # the reference is measured even if it failed the check (it is never chosen)
            accept(r)
            chosen.append(r)
    return chosen


@dataclass
class TuneResult:
    model: str
    ranked: list[Ranked]  # every candidate, predicted fastest first
    measured: list[Ranked]  # the ones measured, in the order chosen
    best: Ranked | None = None  # fastest measured among those that passed the fidelity check
    default: Ranked | None = None
    rejected: list[Ranked] = field(default_factory=list)  # checked and failed the fidelity check
    data: str = ""  # what the fidelity check ran on
    files: dict = field(default_factory=dict)  # what was written: session options, transformed model

    @property
    def speedup(self) -> float | None:
        if self.best and self.default and self.best.measured_ms and self.default.measured_ms:
            return self.default.measured_ms / self.best.measured_ms
        return None


def measure_candidates(model_path: str | Path, chosen: Sequence[Ranked], db: str | Path,
                       cfg=None, input_shapes: dict | None = None, batch_size: int | None = None,
                       progress: Callable | None = None, timeout: float = 300.0, rounds: int = 2,
                       gate: dict | None = None) -> None:
    """Measure the chosen candidates' own files as the profiler does (isolated worker, the regime gate,
    ``rounds`` interleaved passes over all of them); fills ``measured_ms`` with the lowest clean
    latency, else the lowest, and ``noisy``."""
    from narformer_tvm.data.store import Store, file_key
    from narformer_tvm.measure.backends import MeasureConfig
    from narformer_tvm.measure.profiler import Job, job_result, sweep

    cfg = cfg or MeasureConfig()
    model_path = Path(model_path)
    jobs = []
    for r in chosen:
        path = Path(r.model_file or model_path)
        name = model_path.stem + ("" if r.candidate.variant == "fp32" else f":{r.candidate.variant}")
        jobs.append(Job(key=file_key(path, input_shapes, batch_size), name=name, onnx_path=str(path.resolve()),
                        config=r.candidate.measure_overrides()))
    passes = ["main"] + [f"repeat{k}" for k in range(1, rounds)]
    with Store(db) as store:
        for k, pass_ in enumerate(passes):
            step = (lambda kind, i, n, msg, k=k: progress(kind, k * n + i, rounds * n, msg)) if progress else None
            sweep(jobs, store, cfg, pass_=pass_, timeout=timeout, input_shapes=input_shapes, batch_size=batch_size,
                  reference_every=0, progress=step, gate=gate)
        for r, job in zip(chosen, jobs):
            rows = [x for x in (job_result(store, job, cfg, p) for p in passes) if x]
            ok = [x for x in rows if x["latency_ms"]]
            clean = [x for x in ok if not x["noisy"]]
            if ok:
                r.measured_ms, r.noisy = min(x["latency_ms"] for x in (clean or ok)), not clean
            elif r.error is None:
                r.error = next((x["error"] for x in rows if x["error"]), "not measured")


def fidelity_checker(model_path: str | Path, data, target: str = "llvm", max_error: float | None = None,
                     user_check: Callable | None = None) -> Callable[[Ranked], bool]:
    """``accept`` for choose_to_measure: runs a candidate's file under its session options on ``data``
    (an EvalData) against the original model; results cached per variant and optimisation level."""
    from narformer_tvm.measure import fidelity
    from narformer_tvm.measure.backends import MeasureConfig
    from narformer_tvm.measure.ort_session import PROVIDERS, session_options

    max_error = fidelity.DEFAULT_MAX_ERROR if max_error is None else max_error
    reference = fidelity.run(model_path, data.feeds)
    cache: dict[tuple, fidelity.Fidelity] = {}

    def accept(r: Ranked) -> bool:
        c = r.candidate
        key = (c.variant, c.opt_level, c.target)
        if key not in cache:
            so = session_options(replace(MeasureConfig(), **c.measure_overrides()))
            cache[key] = fidelity.check(r.model_file or model_path, data.feeds, reference, so, [PROVIDERS[target]],
                                        max_error, user_check)
        f = cache[key]
        r.fidelity = f.to_dict()
        if not f.passed:
            r.error = f"fidelity check failed: {f.describe()}"
        return f.passed

    return accept


def tune_ort(model_path: str | Path, predictor, out_dir: str | Path, top_k: int = 3, explore: int = 2,
             target: str = "llvm", input_shapes: dict | None = None, batch_size: int | None = None,
             cfg=None, progress: Callable | None = None, lossy: bool = False, data=None,
             max_error: float | None = None, user_check: Callable | None = None, user_check_name: str = "",
             rounds: int = 2, gate: dict | None = None) -> TuneResult:
    """Rank every candidate by prediction, check the chosen ones' outputs against the original
    model, measure those that pass, and write the winner's session options (and its transformed
    model) to ``out_dir``. ``lossy``: also consider int8 and fp16 variants. ``data``: an EvalData
    for static quantisation and the check (default: random inputs, said so in the output)."""
    from narformer_tvm.measure import fidelity
    from narformer_tvm.measure.eval_data import random_data

    model_path, out_dir = Path(model_path), Path(out_dir)
    if not model_path.is_file():
        raise InputError(f"{model_path}: no such file", hint="pass an .onnx model")
    out_dir.mkdir(parents=True, exist_ok=True)
    data = data or random_data(model_path, input_shapes, batch_size)
    max_error = fidelity.DEFAULT_MAX_ERROR if max_error is None else max_error
    space = search_space(target, int(predictor.metadata.get("cores") or 0) or None, lossy)
    ranked = predict_candidates(model_path, predictor, space, out_dir / "variants", input_shapes, batch_size,
                                None if data.random else data.feeds)
    accept = fidelity_checker(model_path, data, target, max_error, user_check)
    chosen = choose_to_measure(ranked, top_k, explore, accept=accept)
    measure_candidates(model_path, chosen, out_dir / "measurements.db", cfg, input_shapes, batch_size, progress,
                       rounds=rounds, gate=gate)
    ok = [r for r in chosen if r.measured_ms and (r.fidelity or {}).get("passed")]
    result = TuneResult(str(model_path), ranked, chosen, min(ok, key=lambda r: r.measured_ms) if ok else None,
                        next((r for r in chosen if r.reason == "default"), None),
                        [r for r in ranked if r.fidelity and not r.fidelity["passed"]], data.describe())
    check = {"metric": user_check_name or "output relative L2 error (and top-1 agreement for class scores) "
                                          "against the original model, graph optimisations off",
             "max_error": max_error, "data": data.describe(), "random_inputs": data.random,
             "lossy_variants_considered": lossy,
             "rejected": [{"candidate": r.candidate.label, **r.fidelity} for r in result.rejected]}
    if result.best is not None:
        best = result.best.candidate
        options = {"model": str(model_path), "variant": best.variant, "session_options": best.session_options(),
                   "measured_ms": result.best.measured_ms, "predicted_ms": result.best.predicted_ms,
                   "default_ms": result.default.measured_ms if result.default else None,
                   "measurement": {"rounds": rounds, "regime_gate": bool(gate), "noisy": result.best.noisy},
                   "fidelity": {**check, "result": result.best.fidelity,
                                "validated": not data.random or not best.lossy}}
        if best.variant != "fp32":
            dst = out_dir / f"{model_path.stem}.{best.variant}.onnx"
            shutil.copyfile(result.best.model_file, dst)
            options["model_file"] = str(dst)
            result.files["model"] = str(dst)
        (out_dir / "session_options.json").write_text(json.dumps(options, indent=2) + "\n")
        result.files["session_options"] = str(out_dir / "session_options.json")
    (out_dir / "candidates.json").write_text(json.dumps([r.to_dict() for r in ranked], indent=2) + "\n")
    result.files["candidates"] = str(out_dir / "candidates.json")
    return result


def open_session(options_file: str | Path):
    """An ``onnxruntime.InferenceSession`` from a ``session_options.json`` written by ``tune_ort``."""
    import onnxruntime as ort

    spec = json.loads(Path(options_file).read_text())
    so, o = ort.SessionOptions(), spec["session_options"]
    so.intra_op_num_threads = o["intra_op_num_threads"]
    so.inter_op_num_threads = o["inter_op_num_threads"]
    so.execution_mode = getattr(ort.ExecutionMode, o["execution_mode"])
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, o["graph_optimization_level"])
    return ort.InferenceSession(spec.get("model_file") or spec["model"], so, providers=o["providers"])


def candidate_jobs(jobs, per_model: int, target: str = "llvm", seed: int = 0, exhaustive: bool = False) -> list:
    """Profiler jobs measuring each model under its default configuration and ``per_model`` random
    other candidates (or all of them), grouped by model so that a partial sweep covers whole models."""
    import zlib

    from narformer_tvm.measure.ort_variants import applies

    space = [c for c in search_space(target) if not is_default(c)]
    out = []
    for job in jobs:
        # a zoo job has no file to look into before its worker exports it: only variants every model takes
        mine = [c for c in space if applies(job.onnx_path, c.variant)] if job.onnx_path else \
            [c for c in space if c.variant != "int8-dynamic-matmul"]
        rng = np.random.default_rng([seed, zlib.crc32(job.key.encode())])
        picks = mine if exhaustive else [mine[i] for i in sorted(rng.choice(len(mine), min(per_model, len(mine)),
                                                                            replace=False))]
        out.append(job)
        out += [job.with_candidate(None if c.variant == "fp32" else c.variant, c.measure_overrides()) for c in picks]
    return out
