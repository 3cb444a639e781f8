"""A predictor adapted to other hardware by a calibration: latency = exp(a) * base ** b (log-linear),
optionally times exp(w . shape) where the graph's shape (size, intensity, where its FLOPs are) moves
the other hardware's relative costs (``descriptors``)."""
from __future__ import annotations

import math

import numpy as np

# What a calibration's correction may depend on, per graph (besides the base's log latency).
SHAPE = ("log_gflops", "log_gb", "log_operators", "dense_conv_flops", "grouped_conv_flops", "dense_conv_bytes",
         "grouped_conv_bytes")


def shape_descriptors(graphs) -> np.ndarray:
    """(G, len(SHAPE)) from encoded graphs (their per-operator costs and kinds)."""
    rows = []
    for g in graphs:
        cost, kind = np.asarray(g.cost, dtype=np.float64), np.asarray(g.kind)  # (N, 2) GFLOPs, GB; (N,)
        total = np.maximum(cost.sum(0), 1e-12)
        share = [cost[kind == k].sum(0) / total for k in (0, 1)]  # dense, grouped convolutions
        rows.append([math.log(total[0]), math.log(total[1]), math.log(max(len(kind), 1)),
                     share[0][0], share[1][0], share[0][1], share[1][1]])
    return np.array(rows, dtype=np.float64).reshape(-1, len(SHAPE))


def calibrated_latency(cal: dict, ms: np.ndarray, shape: np.ndarray | None = None) -> np.ndarray:
    """The base's latencies ``ms`` under calibration ``cal`` (``shape`` needed for ``descriptors``)."""
    ms = np.maximum(np.asarray(ms, dtype=np.float64), 1e-9)
    a, b = cal.get("log_scale", 0.0), cal.get("exponent", 1.0)
    out = math.exp(a) * np.power(ms, b)
    if "weights" in cal:  # log correction, clipped to the range the calibration rows showed
        x = (np.column_stack([np.log(ms), shape]) - np.array(cal["mean"])) / np.array(cal["std"])
        out = out * np.exp(np.clip(x @ np.array(cal["weights"]), *cal["clip"]))
    return out


class CalibratedPredictor:
    """Wraps a latency predictor (torch or ONNX); every other attribute is the base predictor's."""

    def __init__(self, base, calibration: dict):
        self._base = base
        self.calibration = calibration  # {"method", "log_scale": a, "exponent": b[, "weights", "mean", "std", "clip"]}
        self.profile = dict(base.profile)

    def __getattr__(self, name):
        return getattr(self._base, name)

    def predict_encoded(self, graphs, *args, **kwargs) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self._base.predict_encoded(graphs, *args, **kwargs)
        shape = shape_descriptors(graphs) if "weights" in self.calibration else None
        new = calibrated_latency(self.calibration, np.asarray(mean), shape)
        return new, np.asarray(std) * new / np.maximum(np.asarray(mean), 1e-9)
