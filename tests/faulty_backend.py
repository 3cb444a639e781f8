"""A real backend that crashes or hangs on purpose (for the profiler's isolation tests).

It wraps ONNX Runtime and misbehaves by model file name: "crash" aborts the process, "hang" sleeps.
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
        return super().measure(onnx_path, cfg, input_shapes, batch_size)
