"""Runtime backends (ONNX Runtime, TVM, third-party) behind a small registry, and the shared
measurement method.

Backends are found through the ``narformer_tvm.backends`` entry-point group and imported lazily,
so listing them never imports onnxruntime or tvm. A backend measures one ONNX file and returns a
``Measurement``; failures are data (``error`` set), never exceptions, so a sweep goes on.
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from typing import Callable

from narformer_tvm.data.labels import block_spread, label_statistic
from narformer_tvm.errors import InputError
from narformer_tvm.measure.hardware import gpu_name, hardware, physical_cores

ENTRY_POINT_GROUP = "narformer_tvm.backends"


TARGETS = ("llvm", "cuda")


@dataclass(frozen=True)
class MeasureConfig:
    """How a latency is measured: part of every dataset row."""

    runtime: str = "onnxruntime"  # backend name (entry point)
    target: str = "llvm"  # "llvm" (CPU) | "cuda"
    threads: int = 0  # intra-op threads; 0 = physical cores
    opt_level: str = "all"  # ORT graph optimisation: disabled|basic|extended|all (ORT's default: all)
    execution_mode: str = "sequential"  # ORT: sequential|parallel
    inter_threads: int = 0  # ORT parallel mode's inter-op threads; 0 = as many as intra-op threads
    tuned: bool = False  # TVM: whether the build was tuned (profiling builds are not)
    warmup_s: float = 0.2  # warm-up time before timing (at least 3 runs)
    blocks: int = 7  # timed blocks
    min_block_s: float = 0.2  # runs per block = clamp(min_block_s / latency, min_runs, max_runs)
    min_runs: int = 5
    max_runs: int = 20
    kernels: bool = False  # also record per-operator durations (ORT profiler)
    rpc_tracker: str = ""  # host:port of a TVM RPC tracker ("" = local)
    rpc_key: str = ""

    def resolved_threads(self) -> int:
        return self.threads or physical_cores()

    def identity(self) -> dict:
        """The fields that define *what* is measured (not how long): the dataset's config key."""
        keys = ("runtime", "target", "threads", "opt_level", "execution_mode", "tuned", "rpc_key")
        d = {k: getattr(self, k) for k in keys}
        d["threads"] = self.resolved_threads()
        if self.inter_threads:  # only when set, so that datasets measured before it keep their keys
            d["inter_threads"] = self.inter_threads
        return d

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Measurement:
    """Latency samples in ms grouped in blocks, or the error that prevented them."""

    blocks: list[list[float]] | None = None  # raw per-run (or per-block mean) latencies, ms
    error: str | None = None
    info: dict = field(default_factory=dict)  # runs per block, warm-up runs, device, build time...
    kernels: list[dict] | None = None  # per-operator records: name, op, mean_us, runs

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.blocks)

    @property
    def latency_ms(self) -> float | None:
        return label_statistic(self.blocks) if self.ok else None

    @property
    def spread(self) -> float | None:
        return block_spread(self.blocks) if self.ok else None


def runs_per_block(latency_s: float, cfg: MeasureConfig) -> int:
    if latency_s <= 0:
        return cfg.max_runs
    return int(min(cfg.max_runs, max(cfg.min_runs, math.ceil(cfg.min_block_s / latency_s))))


def time_blocks(run: Callable[[], object], cfg: MeasureConfig) -> tuple[list[list[float]], dict]:
    """Warm up, then time ``cfg.blocks`` blocks of single runs; returns (blocks in ms, info)."""
    warm, t_start = [], time.perf_counter()
    while len(warm) < 3 or time.perf_counter() - t_start < cfg.warmup_s:
        t0 = time.perf_counter()
        run()
        warm.append(time.perf_counter() - t0)
        if len(warm) >= 200:
            break
    n = runs_per_block(statistics.median(warm), cfg)
    blocks = []
    for _ in range(cfg.blocks):
        block = []
        for _ in range(n):
            t0 = time.perf_counter()
            run()
            block.append((time.perf_counter() - t0) * 1e3)
        blocks.append(block)
    return blocks, {"warmup_runs": len(warm), "runs_per_block": n}


class Backend:
    """What a runtime plug-in implements. Subclasses live in plugins/ and register an entry point."""

    name = "base"
    targets: tuple[str, ...] = ("llvm",)

    def check(self, cfg: MeasureConfig) -> str | None:
        """None if this backend can measure ``cfg`` here, else why not (said before any sweep)."""
        return None if cfg.target in self.targets else f"{self.name} does not support target {cfg.target!r}"

    def measure(self, onnx_path: str, cfg: MeasureConfig) -> Measurement:
        raise NotImplementedError

    def versions(self) -> dict:
        return {}


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def list_backends() -> list[str]:
    return sorted(_entry_points())


def get_backend(name: str) -> Backend:
    """A backend by entry-point name, or by ``package.module:Class`` for one not yet registered."""
    eps = _entry_points()
    if name in eps:
        return eps[name].load()()
    if ":" in name:
        import importlib

        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)()
        except (ImportError, AttributeError) as e:
            raise InputError(f"cannot load runtime {name!r}: {e}") from None
    raise InputError(f"unknown runtime {name!r}",
                     hint=f"available runtimes: {', '.join(sorted(eps)) or 'none installed'} (or module:Class)")


def fingerprint(cfg: MeasureConfig, backend: Backend | None = None) -> dict:
    """Where and with what a measurement was taken."""
    fp = {**hardware(), "logical_cores": os.cpu_count(), "machine": platform.machine(), "os": platform.system(),
          "python": platform.python_version()}
    if cfg.target == "cuda":
        fp["gpu"] = gpu_name()
    if backend is not None:
        fp.update(backend.versions())
    return fp
