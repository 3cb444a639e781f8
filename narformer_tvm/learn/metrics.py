"""Accuracy metrics of latency (and accuracy) predictors, as the papers report them."""
from __future__ import annotations

import numpy as np


def _arrays(pred, true) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"prediction and truth differ in shape: {p.shape} vs {t.shape}")
    return p, t


def relative_errors(pred, true) -> np.ndarray:
    """|pred - true| / true per model, as fractions."""
    p, t = _arrays(pred, true)
    return np.abs(p - t) / t


def mape(pred, true) -> float:
    """Mean absolute percentage error, as a fraction (0.0307 = 3.07%)."""
    err = relative_errors(pred, true)
    return float(np.mean(err)) if len(err) else float("nan")


def rmspe(pred, true) -> float:
    """Root mean square percentage error, as a fraction."""
    p, t = _arrays(pred, true)
    return float(np.sqrt(np.mean(((p - t) / t) ** 2))) if len(t) else float("nan")


def acc_within(pred, true, delta: float) -> float:
    """Share of predictions within ``delta`` relative error (Acc(10%) is delta=0.1)."""
    err = relative_errors(pred, true)
    return float(np.mean(err <= delta)) if len(err) else float("nan")


def kendall_tau(x, y) -> float:
    """Kendall's tau-b (ties accounted as scipy does), O(n^2) in chunks: fine for 20k points."""
    x, y = _arrays(x, y)
    n = len(x)
    if n < 2:
        return float("nan")
    concordant = discordant = ties_x = ties_y = 0
    chunk = max(1, 4_000_000 // n)
    for start in range(0, n, chunk):
        i = np.arange(start, min(n, start + chunk))
        dx = np.sign(x[i, None] - x[None, :])  # (c, n)
        dy = np.sign(y[i, None] - y[None, :])
        upper = np.arange(n)[None, :] > i[:, None]  # each pair once
        prod = (dx * dy)[upper]
        concordant += int(np.sum(prod > 0))
        discordant += int(np.sum(prod < 0))
        ties_x += int(np.sum((dx[upper] == 0) & (dy[upper] != 0)))
        ties_y += int(np.sum((dy[upper] == 0) & (dx[upper] != 0)))
    denom = np.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return float((concordant - discordant) / denom) if denom else float("nan")


def spearman(x, y) -> float:
    x, y = _arrays(x, y)

    def rank(v):
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        # average ranks of ties
        _, inv, counts = np.unique(v, return_inverse=True, return_counts=True)
        sums = np.bincount(inv, weights=r)
        return sums[inv] / counts[inv]

    rx, ry = rank(x), rank(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    d = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / d) if d else float("nan")


def summary(pred, true) -> dict:
    return {"n": int(len(np.asarray(true))), "mape": mape(pred, true), "rmspe": rmspe(pred, true),
            "acc10": acc_within(pred, true, 0.10), "acc5": acc_within(pred, true, 0.05),
            "kendall_tau": kendall_tau(pred, true)}
