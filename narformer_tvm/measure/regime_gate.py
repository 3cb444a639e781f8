"""The regime gate: two-thread ONNX Runtime on small VMs runs in a fast and a slow regime; measure
only in the fast one (docs/profiling.md)."""
from __future__ import annotations

import math
import statistics
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from narformer_tvm.errors import NarformerError
from narformer_tvm.measure.backends import MeasureConfig
from narformer_tvm.measure.hardware import physical_cores

# Two-thread CPU latencies on small VMs flip between two regimes for seconds to minutes at a time:
# networks of many small operators run much slower in one (docs/profiling.md). No statistic of one
# measurement removes that. The gate measures this depthwise-heavy probe, which the slow regime slows
# most, before and after each model and keeps only measurements taken in its fast regime.
PROBE = {"family": "mobilenetv3", "seed": -3, "index": 0,
         "raw": {"size": "small", "width": 1.0, "expand": 1.0, "extra": -1, "kernel": 3, "se": True,
                 "resolution": 128, "batch": 1}}


REGIME_MARGIN = 1.15  # a probe this much slower than the fast level: the slow regime


# The fast level is a low quantile of the recent probes, not the fastest one: on a machine whose probe
# jitters continuously (no two regimes), one lucky probe would make every later probe look slow.
FAST_QUANTILE = 0.1
PROBE_WINDOW = 600  # recent probes the level is read from: spans regime episodes of a few minutes


REGIME_WAIT_S = 60  # wait this long for the fast regime, then measure anyway (and flag the row noisy)


REGIME_CALIBRATE_S = 10  # probing when the gate starts, to find the fast regime's level



class RegimeGate:
    """Waits for the machine's fast regime (see PROBE) and tells whether a measurement stayed in it."""

    def __init__(self, backend, cfg: MeasureConfig, folder: Path, calibrate_s: float = REGIME_CALIBRATE_S,
                 wait_s: float = REGIME_WAIT_S, known_fast_ms: float | None = None, method: dict | None = None,
                 probe_path: str | None = None):
        """``known_fast_ms``: the fast level earlier sweeps of this dataset saw (Store.probe_reference). Without
        it a sweep that starts in the slow regime and stays there takes the slow level for the fast one.
        ``method``: MeasureConfig timing fields for the probe (default: the sweep's own). ``probe_path``:
        PROBE exported already (by measure.exporter: a sweep's worker runs no torch export)."""
        self.backend, self.cfg, self.wait_s = backend, replace(cfg, **(method or {})), wait_s
        if probe_path is None:
            from narformer_tvm.measure.zoo import Variant

            probe_path = str(Variant(**PROBE).export(Path(folder) / "probe.onnx"))
        self.path = probe_path
        self.known_fast_ms = known_fast_ms
        self.probes: deque[float] = deque(maxlen=PROBE_WINDOW)
        t_end = time.perf_counter() + calibrate_s
        while True:
            self.probe()
            if time.perf_counter() >= t_end:
                break
            time.sleep(0.5)

    def probe(self) -> float:
        m = self.backend.measure(self.path, self.cfg, None, 1)
        if not m.ok:
            raise NarformerError(f"the regime probe failed to run: {m.error}")
        self.probes.append(m.latency_ms)
        return m.latency_ms

    @property
    def fast_ms(self) -> float:
        """The fast regime's level: see fast_level."""
        return fast_level(self.probes, self.known_fast_ms)

    def is_fast(self, probe_ms: float) -> bool:
        return probe_ms <= REGIME_MARGIN * self.fast_ms

    def wait_fast(self) -> float:
        """Probe until the fast regime (or the wait runs out); the last probe's latency."""
        t_end = time.perf_counter() + self.wait_s
        while not self.is_fast(p := self.probe()) and time.perf_counter() < t_end:
            time.sleep(1.0)
        return p


def fast_level(probes: Sequence[float], known_ms: float | None = None) -> float:
    """The fast regime's level from recent ``probes``: their FAST_QUANTILE, or the level earlier sweeps of
    the dataset knew (``known_ms``) where that is lower, so a sweep that starts in a slow episode and stays
    there does not take it for the fast regime."""
    ordered = sorted(probes)
    level = ordered[int(FAST_QUANTILE * (len(ordered) - 1))] if ordered else math.inf
    return min(level, known_ms) if known_ms else level


def gate_settings(cfg: MeasureConfig, wanted: bool | None = None, wait_s: float = REGIME_WAIT_S) -> dict | None:
    """The sweep's ``gate`` argument: ``wanted`` None = on where regimes arise (ONNX Runtime on more
    than one CPU thread), which is where it was measured to matter. A short ``wait_s`` also shortens
    the calibration (0: one probe, no waiting: quick, for tests and small sweeps)."""
    if wanted is None:
        threads = cfg.threads or physical_cores()
        wanted = cfg.runtime == "onnxruntime" and cfg.target == "llvm" and threads > 1 and not cfg.rpc_tracker
    return {"calibrate_s": min(REGIME_CALIBRATE_S, wait_s), "wait_s": wait_s} if wanted else None


def slow_in_hindsight(gated: Sequence[tuple[int, float, float, bool]]) -> list[int]:
    """Rows judged fast against the fast level known then, slow against the sweep's typical one (the
    median of the levels its rows were judged against: an early row may have been judged against a
    level read from a few probes taken in a slow episode).

    ``gated``: (row id, slowest probe around the measurement, fast level then, already noisy)."""
    if not gated:
        return []
    fast = statistics.median(level for _, _, level, _ in gated)
    return [row for row, probe, _, noisy in gated if not noisy and probe > REGIME_MARGIN * fast]
