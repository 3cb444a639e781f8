"""TVM backend: Relax import of the ONNX model, build for llvm or cuda, time with time_evaluator,
locally or on a remote device through TVM's RPC tracker."""
from __future__ import annotations

import os
import tempfile

from narformer_tvm.integrations.tvm_env import make_target, random_inputs
from narformer_tvm.measure.backends import (
    Backend,
    MeasureConfig,
    Measurement,
    runs_per_block,
)


def compile_onnx(onnx_path: str, cfg: MeasureConfig, input_shapes: dict | None = None):
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    model = onnx.load(onnx_path)
    mod = from_onnx(model, shape_dict=input_shapes or None, keep_params_in_input=False)
    target = make_target(cfg)
    if cfg.target == "cuda":
        from tvm.s_tir import dlight as dl

        mod = relax.get_pipeline("zero")(mod)
        with target:
            mod = dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                          dl.gpu.GeneralReduction(), dl.gpu.Fallback())(mod)
    return tvm.compile(mod, target=target), model


class TVMBackend(Backend):
    name = "tvm"
    targets = ("llvm", "cuda")

    def check(self, cfg: MeasureConfig) -> str | None:
        if (why := super().check(cfg)) is not None:
            return why
        try:
            import tvm
        except ImportError:
            return "the tvm runtime needs apache-tvm: pip install 'narformer-tvm[tvm]'"
        if cfg.target == "cuda" and not cfg.rpc_tracker and not tvm.cuda(0).exist:
            return "--target cuda: TVM finds no CUDA device on this machine"
        if cfg.rpc_tracker and not cfg.rpc_key:
            return "--rpc-tracker needs --rpc-key (the device key the RPC servers registered)"
        return None

    def versions(self) -> dict:
        import tvm
        return {"tvm": tvm.__version__}

    def measure(self, onnx_path: str, cfg: MeasureConfig, input_shapes: dict | None = None,
                batch_size: int = 1) -> Measurement:
        try:
            return self._measure(onnx_path, cfg, input_shapes, batch_size)
        except Exception as e:
            return Measurement(error=f"{type(e).__name__}: {str(e)[:500]}")

    def _measure(self, onnx_path, cfg, input_shapes, batch_size) -> Measurement:
        import time

        import tvm
        from tvm import relax

        t0 = time.perf_counter()
        ex, model = compile_onnx(onnx_path, cfg, input_shapes)
        build_s = time.perf_counter() - t0
        arrays = random_inputs(model, input_shapes, batch_size)
        with tempfile.TemporaryDirectory() as d:
            if cfg.rpc_tracker:
                host, port = cfg.rpc_tracker.rsplit(":", 1)
                tracker = tvm.rpc.connect_tracker(host, int(port))
                remote = tracker.request(cfg.rpc_key, priority=1, session_timeout=600)
                lib_path = os.path.join(d, "model.so")
                ex.export_library(lib_path)
                remote.upload(lib_path)
                lib = remote.load_module("model.so")
                dev = remote.cuda() if cfg.target == "cuda" else remote.cpu()
            else:
                lib, dev = ex, (tvm.cuda() if cfg.target == "cuda" else tvm.cpu())
            vm = relax.VirtualMachine(lib, dev)
            inputs = [tvm.runtime.tensor(a, dev) for a in arrays]
            probe = vm.time_evaluator("main", dev, number=1, repeat=3)(*inputs)  # warm-up and estimate
            n = runs_per_block(min(probe.results), cfg)
            res = vm.time_evaluator("main", dev, number=n, repeat=cfg.blocks)(*inputs)
        # time_evaluator reports one mean per block: each block is one sample.
        blocks = [[r * 1e3] for r in res.results]
        return Measurement(blocks=blocks, info={"runs_per_block": n, "build_s": round(build_s, 3),
                                                "remote": bool(cfg.rpc_tracker), "device": str(dev)})
