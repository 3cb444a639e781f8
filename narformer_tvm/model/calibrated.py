"""A predictor adapted to other hardware by a calibration: latency = exp(a) * base ** b (log-linear)."""
from __future__ import annotations

import math

import numpy as np


class CalibratedPredictor:
    """Wraps a latency predictor (torch or ONNX); every other attribute is the base predictor's."""

    def __init__(self, base, calibration: dict):
        self._base = base
        self.calibration = calibration  # {"method", "log_scale": a, "exponent": b}
        self.profile = dict(base.profile)

    def __getattr__(self, name):
        return getattr(self._base, name)

    def transform(self, ms: np.ndarray) -> np.ndarray:
        a, b = self.calibration.get("log_scale", 0.0), self.calibration.get("exponent", 1.0)
        return math.exp(a) * np.power(np.maximum(ms, 1e-9), b)

    def predict_encoded(self, graphs, *args, **kwargs) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self._base.predict_encoded(graphs, *args, **kwargs)
        new = self.transform(np.asarray(mean))
        return new, np.asarray(std) * new / np.maximum(np.asarray(mean), 1e-9)
