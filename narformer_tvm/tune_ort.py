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

from .errors import InputError, NarformerError

VARIANTS = ("fp32", "ort-optimized", "int8-dynamic", "int8-qdq", "fp16")
OPT_LEVELS = ("disabled", "basic", "extended", "all")
MODES = ("sequential", "parallel")
N_CONFIG = 2 + len(OPT_LEVELS) + 1 + len(VARIANTS)  # width of config_vector()
CALIBRATION_SAMPLES = 8  # random-input batches for static quantisation (deployments should use real data)


# ----- candidates ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """One runnable ONNX Runtime configuration of a model."""

    variant: str = "fp32"  # VARIANTS: which model file runs
    threads: int = 0  # intra-op threads; 0 = physical cores
    opt_level: str = "all"  # graph optimisation level at session creation
    execution_mode: str = "sequential"  # sequential | parallel (inter-op thread pool)
    target: str = "llvm"  # llvm (CPU EP) | cuda (CUDA EP)

    def resolved(self) -> "Candidate":
        from .backends import physical_cores

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
        from narformer_plugins.ort import PROVIDERS

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
    from .backends import physical_cores

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


# ----- model variants -----------------------------------------------------------------------------

def _calibration_reader(path: str, input_shapes: dict | None, batch_size: int | None):
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader

    from narformer_plugins.ort import random_feeds

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = [random_feeds(sess, input_shapes, batch_size or 1, seed=i) for i in range(CALIBRATION_SAMPLES)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    return Reader()


def _preprocess(src: str, out: Path) -> str:
    """ONNX Runtime's recommended pre-quantisation step (shape inference, graph clean-up)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(src, str(out), skip_symbolic_shape=True)
        return str(out)
    except Exception:  # some exports defeat it; quantising the original still works
        return src


def make_variant(src: str | Path, variant: str, out: str | Path, input_shapes: dict | None = None,
                 batch_size: int | None = None, target: str = "llvm") -> Path:
    """Write ``variant`` of the ONNX model ``src`` to ``out`` (fp32: ``src`` itself) and return its path."""
    import onnx
    import onnxruntime as ort
    from onnxruntime import quantization as q

    from narformer_plugins.ort import PROVIDERS

    src, out = str(src), Path(out)
    if variant not in VARIANTS:
        raise InputError(f"unknown model variant {variant!r}", hint=f"use one of {', '.join(VARIANTS)}")
    if variant == "fp32":
        return Path(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    if variant == "ort-optimized":
        # "extended" is the highest level whose saved graph stays portable across CPUs.
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(out)
        so.log_severity_level = 3
        ort.InferenceSession(src, so, providers=[PROVIDERS[target]])
    elif variant == "int8-dynamic":
        q.quantize_dynamic(_preprocess(src, out.with_suffix(".pre.onnx")), str(out), weight_type=q.QuantType.QInt8)
    elif variant == "int8-qdq":
        pre = _preprocess(src, out.with_suffix(".pre.onnx"))
        q.quantize_static(pre, str(out), _calibration_reader(pre, input_shapes, batch_size),
                          quant_format=q.QuantFormat.QDQ, activation_type=q.QuantType.QUInt8,
                          weight_type=q.QuantType.QInt8)
    elif variant == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16
        from onnxruntime.transformers.onnx_model import OnnxModel

        model = OnnxModel(convert_float_to_float16(onnx.load(src), keep_io_types=True))
        model.topological_sort()  # the converter appends its input casts last
        onnx.save(model.model, str(out))
    out.with_suffix(".pre.onnx").unlink(missing_ok=True)
    return out


def graph_source(src: str | Path, variant_path: str | Path, variant: str) -> str:
    """The file whose graph the predictor reads for a variant. ORT's optimised graph is made of
    contrib ops (FusedConv, ...) that ONNX shape inference cannot see through, so it is read as its
    source; the variant token tells the two apart."""
    return str(src if variant == "ort-optimized" else variant_path)


# ----- the configuration-aware predictor ----------------------------------------------------------

def with_config(t, c: Candidate, cores: int):
    """A GraphTable whose static features carry the candidate's configuration."""
    from .features import GraphTable

    return GraphTable(t.ops, t.scalars, t.edges, np.concatenate([t.static, config_vector(c, cores)]), t.name)


def candidate_of(config: dict, source: dict) -> Candidate:
    """The candidate a dataset row was measured under (its configuration + its model's transform)."""
    return Candidate(source.get("transform") or "fp32", int(config.get("threads", 0)), config.get("opt_level", "all"),
                     config.get("execution_mode", "sequential"), config.get("target", "llvm"))


def load_config_samples(db: str | Path, target: str = "llvm", include_noisy: bool = False, cores: int | None = None):
    """Every successful ONNX Runtime row of ``target`` with its configuration in the static features."""
    from .dataset import Store
    from .features import GraphTable
    from .train import Sample

    samples = []
    with Store(db, readonly=True) as store:
        configs = {c["id"]: c for c in store.configs() if c["config"].get("runtime") == "onnxruntime"
                   and c["config"].get("target") == target}
        if not configs:
            raise InputError(f"{db}: no ONNX Runtime measurements for target {target}",
                             hint="collect them with `narformer-tvm profile --ort-candidates N ...`")
        for cid, cfg in configs.items():
            cores = cores or (cfg.get("fingerprint") or {}).get("physical_cores") or 0
            for r in store.rows(cid):
                if not (r["latency_ms"] and r["latency_ms"] > 0) or (r["noisy"] and not include_noisy):
                    continue
                c = candidate_of(cfg["config"], json.loads(r["source"] or "{}"))
                t = with_config(GraphTable.from_bytes(r["graph"], r["name"]), c, cores or c.threads)
                samples.append(Sample(f"{r['key']}@{cid}", r["name"], r["family"] or "user", t, r["latency_ms"],
                                      r["model_id"], candidate=c))
    if not samples:
        raise InputError(f"{db}: no successful ONNX Runtime measurements for target {target}")
    return samples


def config_predictor(base, ensemble: int = 3, seed: int = 0):
    """A configuration-aware predictor initialised from a trained graph predictor ``base``: the
    graph part is copied, the configuration columns of the static layer start at zero."""
    import torch

    from .model import ModelConfig, NARFormer
    from .predictor import Predictor

    cfg = ModelConfig(**{**base.config.to_dict(), "n_static": base.config.n_static + N_CONFIG})
    models = []
    for k in range(ensemble):
        torch.manual_seed(seed + k)
        m = NARFormer(cfg)
        state = dict(base.models[k % len(base.models)].state_dict())
        w = torch.zeros_like(m.static[0].weight)
        w[:, :base.config.n_static] = state["static.0.weight"]
        state["static.0.weight"] = w
        m.load_state_dict(state)
        models.append(m)
    return Predictor(models, base.features, replace(base.target), dict(base.profile),
                     {"task": "ort-configs", "base": base.metadata.get("options")})


def source_key(sample) -> str:
    """The source model of a configuration-aware sample (its variants and session options share it)."""
    return sample.key.split("@")[0].split(":")[0]


def split_by_source(samples, test_frac: float = 0.1) -> tuple[list[int], list[int]]:
    """Per family, every configuration of the last ``test_frac`` source models is the test set: a
    model's int8 or threaded rows never leak into training while its default row is tested."""
    first_id: dict[str, int] = {}
    family: dict[str, str] = {}
    for s in samples:
        k = source_key(s)
        first_id[k] = min(first_id.get(k, s.model_id), s.model_id)
        family.setdefault(k, s.family)
    by_family: dict[str, list[str]] = {}
    for k in sorted(first_id, key=first_id.get):
        by_family.setdefault(family[k], []).append(k)
    test_keys = set()
    for keys in by_family.values():
        if len(keys) > 1:
            test_keys.update(keys[len(keys) - max(1, int(round(test_frac * len(keys)))):])
    test = [i for i, s in enumerate(samples) if source_key(s) in test_keys]
    return [i for i, s in enumerate(samples) if source_key(s) not in test_keys], test


def train_config_predictor(samples, base, train_idx, opts, ensemble: int = 3, cores: int | None = None,
                           checkpoint=None, progress: Callable | None = None):
    """Fine-tune a configuration-aware predictor from ``base`` on ``samples[train_idx]`` (validation
    carved from the training models, never from the test ones)."""
    from .train import carve_validation, train_predictor

    groups = sorted({source_key(samples[i]) for i in train_idx})
    _, val_groups = carve_validation(list(range(len(groups))), 0.1, opts.fit.seed)
    val_keys = {groups[i] for i in val_groups}
    tr = [samples[i] for i in train_idx if source_key(samples[i]) not in val_keys]
    val = [samples[i] for i in train_idx if source_key(samples[i]) in val_keys]
    pred = config_predictor(base, ensemble, opts.fit.seed)
    pred.metadata["cores"] = cores or max(s.candidate.threads for s in samples)  # the profiling machine's
    pred = train_predictor(tr, val, opts, checkpoint=checkpoint, progress=progress, init=pred)
    pred.metadata["task"] = "ort-configs"
    return pred


# ----- ranking, measuring, choosing ---------------------------------------------------------------

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
    from .features import encode_table, table
    from .graph import build_graph

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
    from .backends import MeasureConfig
    from .dataset import Store
    from .profile import job_result, jobs_from_paths, sweep

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
