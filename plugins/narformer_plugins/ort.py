"""ONNX Runtime backend: CPU and CUDA execution providers."""
from __future__ import annotations

import gc
import json
import os
import tempfile
from collections import defaultdict

import numpy as np

from narformer_tvm.backends import Backend, Measurement, MeasureConfig, time_blocks

OPT_LEVELS = ("disabled", "basic", "extended", "all")
PROVIDERS = {"llvm": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
          "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def session_options(cfg: MeasureConfig):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = cfg.resolved_threads()
    # The parallel executor runs independent branches on the inter-op pool: give it the same threads.
    so.inter_op_num_threads = cfg.resolved_threads() if cfg.execution_mode == "parallel" else 1
    so.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[cfg.opt_level]
    so.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if cfg.execution_mode == "parallel"
                         else ort.ExecutionMode.ORT_SEQUENTIAL)
    so.log_severity_level = 3
    return so


def random_feeds(sess, input_shapes: dict | None = None, batch_size: int = 1, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in sess.get_inputs():
        if input_shapes and inp.name in input_shapes:
            shape = list(input_shapes[inp.name])
        else:
            shape = [d if isinstance(d, int) and d > 0 else (batch_size if k == 0 else None)
                     for k, d in enumerate(inp.shape)]
            if None in shape:
                raise ValueError(f"input {inp.name!r} has dynamic dimensions {inp.shape}; give --input-shape")
        dtype = DTYPES.get(inp.type, np.float32)
        feeds[inp.name] = (rng.standard_normal(shape) if np.issubdtype(dtype, np.floating)
                           else rng.integers(0, 2, shape)).astype(dtype)
    return feeds


def _kernel_records(profile_path: str) -> list[dict]:
    """Mean duration per node from ORT's profiler trace (one event per kernel per run)."""
    with open(profile_path) as f:
        events = json.load(f)
    durs: dict[str, list[float]] = defaultdict(list)
    ops: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            node = e["name"][: -len("_kernel_time")]
            durs[node].append(float(e.get("dur", 0)))
            ops[node] = e.get("args", {}).get("op_name", "")
    return [{"name": n, "op": ops[n], "mean_us": float(np.mean(d)), "runs": len(d)} for n, d in durs.items()]


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    targets = ("llvm", "cuda")

    def check(self, cfg: MeasureConfig) -> str | None:
        if (why := super().check(cfg)) is not None:
            return why
        if cfg.opt_level not in OPT_LEVELS:
            return f"unknown ONNX Runtime optimisation level {cfg.opt_level!r} (use {', '.join(OPT_LEVELS)})"
        if cfg.rpc_tracker:
            return "ONNX Runtime measures locally; --rpc-tracker is for the tvm runtime"
        import onnxruntime as ort

        provider = PROVIDERS[cfg.target]
        if provider not in ort.get_available_providers():
            return (f"--target {cfg.target} needs ONNX Runtime's {provider}, which this onnxruntime lacks "
                    f"(available: {', '.join(ort.get_available_providers())}); on a machine with an NVIDIA GPU "
                    "install onnxruntime-gpu in place of onnxruntime")
        return None

    def versions(self) -> dict:
        import onnxruntime as ort
        return {"onnxruntime": ort.__version__}

    def session(self, path: str, cfg: MeasureConfig, profile_prefix: str | None = None):
        import onnxruntime as ort

        so = session_options(cfg)
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        provider = PROVIDERS[cfg.target]
        sess = ort.InferenceSession(path, so, providers=[provider])
        if sess.get_providers()[0] != provider:  # ORT falls back silently otherwise
            raise RuntimeError(f"{provider} could not be initialised (got {sess.get_providers()})")
        return sess

    def measure(self, onnx_path: str, cfg: MeasureConfig, input_shapes: dict | None = None,
                batch_size: int = 1) -> Measurement:
        try:
            sess = self.session(onnx_path, cfg)
            feeds = random_feeds(sess, input_shapes, batch_size)
            sess.run(None, feeds)
            blocks, info = time_blocks(lambda: sess.run(None, feeds), cfg)
            info["provider"] = sess.get_providers()[0]
            sess = None  # frees the session and joins its thread pool: nothing spins during the next model
            kernels = self._kernels(onnx_path, cfg, feeds) if cfg.kernels else None
            return Measurement(blocks=blocks, info=info, kernels=kernels)
        except Exception as e:  # any runtime failure is recorded, the sweep goes on
            return Measurement(error=f"{type(e).__name__}: {str(e)[:500]}")

    def _kernels(self, onnx_path: str, cfg: MeasureConfig, feeds: dict, runs: int = 10) -> list[dict]:
        with tempfile.TemporaryDirectory() as d:
            sess = self.session(onnx_path, cfg, profile_prefix=os.path.join(d, "ort"))
            for _ in range(runs + 2):
                sess.run(None, feeds)
            records = _kernel_records(sess.end_profiling())
            del sess
            gc.collect()
            return records
