"""A real backend that crashes or hangs on purpose (for the profiler's isolation tests).

It wraps ONNX Runtime and misbehaves by model file name: "crash" aborts the process, "hang" sleeps,
"slow" takes a second longer (so a test can interrupt a sweep before it ends, on any machine).
"""
import os
import time

from narformer_plugins.ort import OnnxRuntimeBackend


class FaultyBackend(OnnxRuntimeBackend):
    name = "faulty"

    def measure(self, onnx_path, cfg, input_shapes=None, batch_size=1):
        stem = os.path.basename(onnx_path)
        if stem.startswith("crash"):
            os.abort()
        if stem.startswith("hang"):
            time.sleep(3600)
        if stem.startswith("slow"):
            time.sleep(1.0)
        return super().measure(onnx_path, cfg, input_shapes, batch_size)
