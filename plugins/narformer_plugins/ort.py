"""ONNX Runtime backend: CPU and CUDA execution providers."""
from __future__ import annotations

import gc
import json
import os
import tempfile
from collections import defaultdict

import numpy as np

from narformer_tvm.measure.backends import (
    Backend,
    MeasureConfig,
    Measurement,
    time_blocks,
)
from narformer_tvm.measure.ort_session import (
    OPT_LEVELS,
    PROVIDERS,
    random_feeds,
    session_options,
)


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
    targets = ("llvm", "cuda", "tensorrt")

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
