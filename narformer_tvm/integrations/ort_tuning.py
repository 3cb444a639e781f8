"""ONNX Runtime tuning pass: predict every deployment configuration of a model, measure only the best few.

A candidate is a runnable ONNX Runtime set-up: a model variant made by a real tool (the original,
ONNX Runtime's offline-optimised graph, dynamic int8 and static QDQ int8 quantisation from
``onnxruntime.quantization``, fp16 where the CUDA EP benefits) and session options (intra-op
threads, execution mode, graph optimisation level). One predictor reads the variant's graph plus
configuration features and ranks all candidates; the top-k, the uncertain ones that could still
be best, and the default set-up (the reference) are measured in the profiler's isolated worker.
"""
from __future__ import annotations

import itertools
import json
import math
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from narformer_tvm.errors import InputError, NarformerError
from narformer_tvm.measure.ort_session import OPT_LEVELS  # noqa: E402
from narformer_tvm.measure.ort_variants import VARIANTS, graph_source, make_variant

MODES = ("sequential", "parallel")


N_CONFIG = 2 + len(OPT_LEVELS) + 1 + len(VARIANTS)  # width of config_vector()


@dataclass(frozen=True)
class Candidate:
    """One runnable ONNX Runtime configuration of a model."""

    variant: str = "fp32"  # VARIANTS: which model file runs
    threads: int = 0  # intra-op threads; 0 = physical cores
    opt_level: str = "all"  # graph optimisation level at session creation
    execution_mode: str = "sequential"  # sequential | parallel (inter-op thread pool)
    target: str = "llvm"  # llvm (CPU EP) | cuda (CUDA EP)

    def resolved(self) -> "Candidate":
        from narformer_tvm.measure.hardware import physical_cores

        return replace(self, threads=self.threads or physical_cores())

    @property
    def label(self) -> str:
        return f"{self.variant} threads={self.threads or 'all'} opt={self.opt_level} {self.execution_mode}"

    def measure_overrides(self) -> dict:
        """The MeasureConfig fields this candidate sets (the profiler's per-job configuration)."""
        return {"threads": self.threads, "opt_level": self.opt_level, "execution_mode": self.execution_mode,
                "target": self.target}

    def session_options(self) -> dict:
        """What a deployment sets, as JSON: the ``onnxruntime.SessionOptions`` fields and providers."""
        from narformer_tvm.measure.ort_session import PROVIDERS

        c = self.resolved()
        return {"providers": [PROVIDERS[c.target]], "intra_op_num_threads": c.threads,
                "inter_op_num_threads": c.threads if c.execution_mode == "parallel" else 1,
                "execution_mode": f"ORT_{c.execution_mode.upper()}",
                "graph_optimization_level": {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                                             "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}[c.opt_level]}


DEFAULT = Candidate()  # ONNX Runtime's defaults: the reference every speedup is measured against


def search_space(target: str = "llvm", cores: int | None = None) -> list[Candidate]:
    """Every candidate for a target. CPU: 4 variants x threads {1, cores} x 4 levels x 2 modes.
    CUDA: fp32/optimised/fp16 (int8 on the CUDA EP needs TensorRT) x 4 levels x 2 modes."""
    from narformer_tvm.measure.hardware import physical_cores

    cores = cores or physical_cores()
    if target == "llvm":
        variants, threads = ("fp32", "ort-optimized", "int8-dynamic", "int8-qdq"), sorted({1, cores})
    elif target == "cuda":
        variants, threads = ("fp32", "ort-optimized", "fp16"), [cores]
    else:
        raise InputError(f"unknown target {target!r}", hint="use llvm or cuda")
    return [Candidate(v, t, o, m, target) for v, t, o, m in itertools.product(variants, threads, OPT_LEVELS, MODES)]


def config_vector(c: Candidate, cores: int) -> np.ndarray:
    """Configuration features appended to a graph's static features: (N_CONFIG,) float32."""
    threads = c.threads or cores
    v = [math.log2(threads), float(threads >= cores)]
    v += [float(c.opt_level == o) for o in OPT_LEVELS]
    v += [float(c.execution_mode == "parallel")]
    v += [float(c.variant == k) for k in VARIANTS]
    return np.array(v, dtype=np.float32)


def with_config(t, c: Candidate, cores: int):
    """A GraphTable whose static features carry the candidate's configuration."""
    from narformer_tvm.graph.tokens import GraphTable

    return GraphTable(t.ops, t.scalars, t.edges, np.concatenate([t.static, config_vector(c, cores)]), t.name)


def candidate_of(config: dict, source: dict) -> Candidate:
    """The candidate a dataset row was measured under (its configuration + its model's transform)."""
    return Candidate(source.get("transform") or "fp32", int(config.get("threads", 0)), config.get("opt_level", "all"),
                     config.get("execution_mode", "sequential"), config.get("target", "llvm"))


@dataclass
class Ranked:
    candidate: Candidate
    predicted_ms: float | None = None
    spread: float | None = None  # ensemble std of the prediction, ms
    measured_ms: float | None = None
    error: str | None = None  # the variant could not be made, or its measurement failed
    reason: str = ""  # why it was measured: top-k | uncertain | default

    def to_dict(self) -> dict:
        return {**asdict(self), "candidate": asdict(self.candidate), "label": self.candidate.label}


def predict_candidates(model_path: str | Path, predictor, candidates: Sequence[Candidate], work_dir: str | Path,
                       input_shapes: dict | None = None, batch_size: int | None = None) -> list[Ranked]:
    """Make each variant once, predict every candidate; ranked fastest first (failed variants last)."""
    from narformer_tvm.graph.onnx_graph import build_graph
    from narformer_tvm.graph.tokens import encode_table, table

    cores = int(predictor.metadata.get("cores") or predictor.profile.get("threads") or 1)
    work_dir = Path(work_dir)
    graphs, errors = {}, {}
    for variant in sorted({c.variant for c in candidates}, key=VARIANTS.index):
        try:
            path = make_variant(model_path, variant, work_dir / f"model.{variant}.onnx", input_shapes, batch_size,
                                candidates[0].target)
            graphs[variant] = table(build_graph(graph_source(model_path, path, variant), input_shapes, batch_size))
        except NarformerError:
            raise
        except Exception as e:  # a tool that cannot transform this model: the candidate is out, the rest go on
            errors[variant] = f"{type(e).__name__}: {str(e)[:300]}"
    ok = [c for c in candidates if c.variant in graphs]
    encoded = [encode_table(with_config(graphs[c.variant], c, cores), predictor.features) for c in ok]
    mean, std = predictor.predict_encoded(encoded) if encoded else (np.zeros(0), np.zeros(0))
    ranked = [Ranked(c, float(m), float(s)) for c, m, s in zip(ok, mean, std)]
    ranked.sort(key=lambda r: r.predicted_ms)
    return ranked + [Ranked(c, error=errors[c.variant]) for c in candidates if c.variant in errors]


def choose_to_measure(ranked: Sequence[Ranked], top_k: int = 3, explore: int = 2, z: float = 2.0) -> list[Ranked]:
    """The top-k predictions, then up to ``explore`` uncertain candidates whose optimistic estimate
    (mean - z * spread) beats the best prediction, then the default configuration."""
    usable = [r for r in ranked if r.predicted_ms is not None]
    chosen = []
    for r in usable[:top_k]:
        r.reason = "top-k"
        chosen.append(r)
    if usable:
        best = usable[0].predicted_ms
        hopeful = sorted((r for r in usable[top_k:] if r.predicted_ms - z * (r.spread or 0) < best),
                         key=lambda r: r.predicted_ms - z * (r.spread or 0))
        for r in hopeful[:explore]:
            r.reason = "uncertain"
            chosen.append(r)
    default = DEFAULT.resolved()
    for r in ranked:
        if r.candidate.resolved() == replace(default, target=r.candidate.target) and r not in chosen:
            r.reason = "default"
            chosen.append(r)
    return chosen


@dataclass
class TuneResult:
    model: str
    ranked: list[Ranked]  # every candidate, predicted fastest first
    measured: list[Ranked]  # the ones measured, in the order chosen
    best: Ranked | None = None  # fastest measured
    default: Ranked | None = None
    files: dict = field(default_factory=dict)  # what was written: session options, transformed model

    @property
    def speedup(self) -> float | None:
        if self.best and self.default and self.best.measured_ms and self.default.measured_ms:
            return self.default.measured_ms / self.best.measured_ms
        return None


def measure_candidates(model_path: str | Path, chosen: Sequence[Ranked], db: str | Path,
                       cfg=None, input_shapes: dict | None = None, batch_size: int | None = None,
                       progress: Callable | None = None, timeout: float = 300.0) -> None:
    """Measure the chosen candidates in the profiler's isolated worker; fills ``measured_ms``/``error``."""
    from narformer_tvm.data.store import Store
    from narformer_tvm.measure.backends import MeasureConfig
    from narformer_tvm.measure.profiler import job_result, jobs_from_paths, sweep

    cfg = cfg or MeasureConfig()
    (base,) = jobs_from_paths([Path(model_path)], input_shapes, batch_size)
    jobs = [base.with_candidate(None if r.candidate.variant == "fp32" else r.candidate.variant,
                                r.candidate.measure_overrides()) for r in chosen]
    with Store(db) as store:
        sweep(jobs, store, cfg, pass_="main", timeout=timeout, input_shapes=input_shapes, batch_size=batch_size,
              reference_every=0, progress=progress)
        for r, job in zip(chosen, jobs):
            row = job_result(store, job, cfg)
            r.measured_ms, r.error = (row["latency_ms"], row["error"]) if row else (None, "not measured")


def tune_ort(model_path: str | Path, predictor, out_dir: str | Path, top_k: int = 3, explore: int = 2,
             target: str = "llvm", input_shapes: dict | None = None, batch_size: int | None = None,
             cfg=None, progress: Callable | None = None) -> TuneResult:
    """Rank every candidate by prediction, measure the chosen few, write the winner's session options
    (and its transformed model) to ``out_dir``."""
    model_path, out_dir = Path(model_path), Path(out_dir)
    if not model_path.is_file():
        raise InputError(f"{model_path}: no such file", hint="pass an .onnx model")
    out_dir.mkdir(parents=True, exist_ok=True)
    ranked = predict_candidates(model_path, predictor, search_space(target, int(predictor.metadata.get("cores") or 0)
                                                                     or None), out_dir / "variants",
                                input_shapes, batch_size)
    chosen = choose_to_measure(ranked, top_k, explore)
    measure_candidates(model_path, chosen, out_dir / "measurements.db", cfg, input_shapes, batch_size, progress)
    ok = [r for r in chosen if r.measured_ms]
    result = TuneResult(str(model_path), ranked, chosen, min(ok, key=lambda r: r.measured_ms) if ok else None,
                        next((r for r in chosen if r.reason == "default"), None))
    if result.best is not None:
        best = result.best.candidate
        options = {"model": str(model_path), "variant": best.variant, "session_options": best.session_options(),
                   "measured_ms": result.best.measured_ms, "predicted_ms": result.best.predicted_ms,
                   "default_ms": result.default.measured_ms if result.default else None}
        if best.variant != "fp32":
            dst = out_dir / f"{model_path.stem}.{best.variant}.onnx"
            shutil.copyfile(out_dir / "variants" / f"model.{best.variant}.onnx", dst)
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

    space = [c for c in search_space(target) if c.resolved() != replace(DEFAULT, target=target).resolved()]
    out = []
    for job in jobs:
        rng = np.random.default_rng([seed, zlib.crc32(job.key.encode())])
        picks = space if exhaustive else [space[i] for i in sorted(rng.choice(len(space), min(per_model, len(space)),
                                                                              replace=False))]
        out.append(job)
        out += [job.with_candidate(None if c.variant == "fp32" else c.variant, c.measure_overrides()) for c in picks]
    return out
