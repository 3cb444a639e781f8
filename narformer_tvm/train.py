"""Training loop for latency predictors (relative-error loss, AdamW, warm-up + cosine decay)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .dataset import collate, size_buckets
from .features import EncodedGraph
from .model import NARFormer


@dataclass
class FitConfig:
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 32
    warmup: float = 0.05  # fraction of steps with linear warm-up
    loss: str = "relative"  # "relative": |pred - y| / y (MAPE) | "mse" (on normalised targets)
    seed: int = 0


def loss_fn(kind: str, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if kind == "relative":
        return ((pred - y).abs() / y.clamp_min(1e-6)).mean()
    if kind == "mse":
        return torch.mean((pred - y) ** 2)
    raise ValueError(f"unknown loss {kind!r}; use relative or mse")


def fit(model: NARFormer, graphs: Sequence[EncodedGraph], targets: Sequence[float], cfg: FitConfig = FitConfig(),
        on_epoch: Callable[[int, float], bool | None] | None = None) -> list[float]:
    """Train ``model`` in place on normalised ``targets``; returns the mean training loss per epoch.

    ``on_epoch(epoch, loss)`` may return True to stop early.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    y = np.asarray(targets, dtype=np.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * math.ceil(len(graphs) / cfg.batch_size)
    warm = max(1, int(cfg.warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        total, count = 0.0, 0
        for idx in size_buckets([g.n for g in graphs], cfg.batch_size, rng):
            batch = collate([graphs[i] for i in idx], y[idx])
            loss = loss_fn(cfg.loss, model(*batch.inputs()), batch.y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            count += len(idx)
        history.append(total / count)
        if on_epoch is not None and on_epoch(epoch, history[-1]):
            break
    model.eval()
    return history
