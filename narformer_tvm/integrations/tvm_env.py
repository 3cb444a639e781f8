"""TVM without its sharp edges: the MetaSchedule import shim, a builder that fits the timeout, the
target of this machine, random inputs."""
from __future__ import annotations

import functools
import importlib
import inspect
import linecache
import sys

import numpy as np

from narformer_tvm.measure.backends import MeasureConfig
from narformer_tvm.measure.hardware import cpu_flags

MS_MODULES = ("tvm.s_tir.meta_schedule", "tvm.meta_schedule")  # TVM >= 0.24, then older releases
INTRINSICS = ("tvm.s_tir.tensor_intrin", "tvm.tir.tensor_intrin")  # imported by schedule rules and trace replay


def _import_first(names):
    errors = []
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError as e:
            errors.append(f"{name}: {e}")
    raise ImportError("MetaSchedule not found (" + "; ".join(errors) + "); pip install 'narformer-tvm[tvm]'")


def meta_schedule():
    """The MetaSchedule package of the installed TVM, whichever path it lives at (the one shim)."""
    ms = _import_first(MS_MODULES)
    _import_intrinsics()
    return ms


def quick_stack(context: int = 1) -> list[inspect.FrameInfo]:
    """``inspect.stack`` with each frame's file name taken from its code object: inspect resolves a
    frame's source file through ``getmodule``, a scan of ``sys.modules``, for each frame whose file
    does not exist (the frozen importlib frames of an import)."""
    out, frame = [], sys._getframe(1)
    while frame is not None:
        name, line = frame.f_code.co_filename, frame.f_lineno
        lines = index = None
        if context > 0 and line:
            start = max(line - 1 - context // 2, 0)
            got = [linecache.getline(name, i + 1) for i in range(start, start + context)]
            if any(got):
                lines, index = got, line - 1 - start
        out.append(inspect.FrameInfo(frame, name, line, frame.f_code.co_name, lines, index))
        frame = frame.f_back
    return out


@functools.cache
def _import_intrinsics() -> None:
    # TVMScript's prim_func decorator calls inspect.stack() for each of the ~500 intrinsics, inside the
    # import: a minute or two here, a few seconds with quick_stack in its place for the import.
    slow, inspect.stack = inspect.stack, quick_stack
    try:
        _import_first(INTRINSICS)
    except ImportError:  # a TVM without them: nothing to speed up
        pass
    finally:
        inspect.stack = slow


def fast_build(mod, target, params):
    """MetaSchedule's default build without ``import tvm.s_tir.tensor_intrin`` (25 s in every fresh
    worker here, past the builder's 30 s timeout). Enough for CPU targets without tensor intrinsics."""
    from tvm.driver import build as tvm_build

    try:
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    except ImportError:  # TVM < 0.24
        from tvm.tir.transform import RemoveWeightLayoutRewriteBlock
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def fast_builder(max_workers: int | None = None, timeout_sec: float = 60.0):
    return meta_schedule().builder.LocalBuilder(f_build=fast_build, max_workers=max_workers, timeout_sec=timeout_sec)


def make_target(cfg: MeasureConfig):
    """The TVM target a measurement configuration builds for (CUDA: the GPU's own limits)."""
    import tvm

    if cfg.target == "cuda":
        return tvm.target.Target(_cuda_target(), host={"kind": "llvm"})
    if cfg.rpc_tracker:  # remote boards may differ from this CPU
        return tvm.target.Target({"kind": "llvm", "num-cores": cfg.resolved_threads()})
    return host_target(cfg.resolved_threads())


def host_target(cores: int):
    """This CPU as an llvm target. Targets are dicts in TVM 0.27; "mcpu": "native" silently falls back
    to generic, so the CPU is detected."""
    import tvm
    from tvm.target import codegen

    spec = {"kind": "llvm", "num-cores": cores}
    cpu = codegen.llvm_get_system_cpu()
    if cpu and cpu != "generic":
        spec["mcpu"] = cpu
        spec.update(hidden_feature_attrs(cpu_flags().split(",")))
    return tvm.target.Target(spec)


def hidden_feature_attrs(flags: list[str]) -> dict:
    """LLVM names the CPU from its family and model; a VM can hide instruction sets that CPU has
    (AVX-512 on a Zen 4 guest), and code built for the name then dies with an illegal instruction.
    Turn off what the kernel does not report."""
    if not any(flags) or "avx512f" in flags:  # no x86 flags to go by, or nothing hidden
        return {}
    return {"mattr": ["-avx512f"]}


def _cuda_target():
    """The GPU's own limits (arch, shared memory, threads per block), which the default GPU schedules
    read; without a device (a build for another machine, or a test), an sm_80 with CUDA's minimums."""
    import tvm

    dev = tvm.cuda(0)
    if dev.exist:
        return tvm.target.Target.from_device(dev)
    return tvm.target.Target({"kind": "cuda", "arch": "sm_80", "max_shared_memory_per_block": 48 * 1024,
                              "max_threads_per_block": 1024, "thread_warp_size": 32})


def random_inputs(model, input_shapes: dict | None = None, batch_size: int = 1, seed: int = 0) -> list[np.ndarray]:
    """Random float32 data for the model's non-weight inputs; a symbolic leading dim is the batch."""
    inits = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    arrays = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (batch_size if k == 0 else 1)
                for k, d in enumerate(inp.type.tensor_type.shape.dim)]
        arrays.append(rng.standard_normal((input_shapes or {}).get(inp.name, dims)).astype(np.float32))
    return arrays
