"""ONNX Runtime sessions as the profiler and the tuning pass open them: providers, options, inputs."""
from __future__ import annotations

import numpy as np

from narformer_tvm.measure.backends import MeasureConfig

OPT_LEVELS = ("disabled", "basic", "extended", "all")
PROVIDERS = {"llvm": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
          "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def session_options(cfg: MeasureConfig):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = cfg.resolved_threads()
    # The parallel executor runs independent branches on the inter-op pool (default: the same threads).
    so.inter_op_num_threads = (cfg.inter_threads or cfg.resolved_threads()) if cfg.execution_mode == "parallel" else 1
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
