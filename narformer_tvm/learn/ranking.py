"""Ranking objectives for cost models: a tuner only needs the candidates of one task in the right order.

Scores of different tasks are never compared (a pair across tasks carries no information: each task's
scores are normalised to its own best), so both the loss and the minibatches work task by task.
"""
from __future__ import annotations

import numpy as np


def pairwise_rank_loss(scores, target, groups):
    """RankNet's logistic loss over the ordered pairs of one group, each pair weighted by the gap of its
    targets (LambdaRank's idea with the gain difference as weight): swapping two near-equal schedules
    costs little, ranking a failed build above the best costs most.

    scores, target, groups: (B,) tensors; groups holds a task id per row. Returns a scalar; zero (with a
    gradient) when no group has two different targets.
    """
    import torch

    gap = target[:, None] - target[None, :]  # (B, B) > 0 where row i should rank above row j
    pairs = (groups[:, None] == groups[None, :]) & (gap > 0)
    if not bool(pairs.any()):
        return scores.sum() * 0.0
    margin = (scores[:, None] - scores[None, :])[pairs]  # (P,)
    weight = gap[pairs]
    return (torch.nn.functional.softplus(-margin) * weight).sum() / weight.sum()


def task_batches(group_sizes: list[int], batch_size: int, tasks_per_batch: int, rng: np.random.Generator,
                 focus: list[int] | None = None) -> np.ndarray:
    """Row indices of one minibatch: ``tasks_per_batch`` tasks drawn in proportion to their sizes, an
    equal share of rows from each, so every row has partners to be ranked against. Rows are numbered
    task after task in ``group_sizes`` order. ``focus``: task indices always in the batch (the task being
    tuned, while fine-tuning online on top of a pre-training corpus)."""
    sizes = np.asarray(group_sizes, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    usable = np.flatnonzero(sizes >= 2)
    if not len(usable):
        usable = np.flatnonzero(sizes >= 1)
    chosen = [t for t in (focus or []) if sizes[t] >= 1][:tasks_per_batch]
    rest = np.setdiff1d(usable, chosen)
    k = min(tasks_per_batch - len(chosen), len(rest))
    if k > 0:
        chosen += list(rng.choice(rest, size=k, replace=False, p=sizes[rest] / sizes[rest].sum()))
    per_task = max(2, batch_size // max(len(chosen), 1))
    rows = [starts[t] + rng.choice(sizes[t], size=min(per_task, sizes[t]), replace=False) for t in chosen]
    return np.concatenate(rows)


def within_task_kendall(scores: np.ndarray, target: np.ndarray, groups: np.ndarray) -> float:
    """Kendall's tau between scores and targets within each task, averaged over tasks with a spread
    (weighted by their row counts)."""
    from narformer_tvm.learn.metrics import kendall_tau

    taus, weights = [], []
    for g in np.unique(groups):
        m = groups == g
        if m.sum() >= 3 and np.ptp(target[m]) > 0:
            tau = kendall_tau(scores[m], target[m])
            if np.isfinite(tau):
                taus.append(tau)
                weights.append(m.sum())
    return float(np.average(taus, weights=weights)) if taus else float("nan")
