"""Padded batches of encoded graphs for the model, grouped by size."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from narformer_tvm.graph.tokens import EncodedGraph

if TYPE_CHECKING:
    import torch


@dataclass
class Batch:  # fields are torch tensors
    x: "torch.Tensor"  # (B, N, F) token features, zero on padding
    adj: "torch.Tensor"  # (B, N, N) symmetric adjacency with self-loops on real nodes
    degree: "torch.Tensor"  # (B, N, 2) in/out connection counts
    mask: "torch.Tensor"  # (B, N) True on real nodes
    static: "torch.Tensor"  # (B, S) graph-level features
    cost: "torch.Tensor"  # (B, N, 2) per-operator GFLOPs and GB, zero on padding (and for cells)
    kind: "torch.Tensor"  # (B, N) operator kind (features.KINDS index)
    y: "torch.Tensor | None" = None  # (B,) targets, when known

    def inputs(self) -> tuple["torch.Tensor", ...]:
        return self.x, self.adj, self.degree, self.mask, self.static, self.cost, self.kind

    def __len__(self) -> int:
        return self.x.shape[0]


def pad_graphs(graphs: Sequence[EncodedGraph]) -> dict[str, np.ndarray]:
    """The model's inputs as numpy arrays, padded to the largest graph (names as in Batch)."""
    b = len(graphs)
    n = max(g.n for g in graphs)
    f = graphs[0].x.shape[1]
    x = np.zeros((b, n, f), dtype=np.float32)
    adj = np.zeros((b, n, n), dtype=np.float32)
    degree = np.zeros((b, n, 2), dtype=np.float32)
    mask = np.zeros((b, n), dtype=bool)
    cost = np.zeros((b, n, 2), dtype=np.float32)
    kind = np.zeros((b, n), dtype=np.int64)
    for i, g in enumerate(graphs):
        x[i, :g.n] = g.x
        if g.cost is not None:
            cost[i, :g.n] = g.cost
        if g.kind is not None:
            kind[i, :g.n] = g.kind
        mask[i, :g.n] = True
        idx = np.arange(g.n)
        adj[i, idx, idx] = 1.0
        if len(g.edges):
            src, dst = g.edges[:, 0], g.edges[:, 1]
            adj[i, src, dst] = 1.0
            adj[i, dst, src] = 1.0
            np.add.at(degree[i, :, 1], src, 1.0)
            np.add.at(degree[i, :, 0], dst, 1.0)
    static = np.stack([g.static for g in graphs]).astype(np.float32)
    return {"x": x, "adj": adj, "degree": degree, "mask": mask, "static": static, "cost": cost, "kind": kind}


INPUT_NAMES = ("x", "adj", "degree", "mask", "static", "cost", "kind")  # the model's forward arguments, in order


def collate(graphs: Sequence[EncodedGraph], targets: Sequence[float] | None = None) -> Batch:
    import torch  # lazy: profiling reads and writes datasets without torch

    arrays = pad_graphs(graphs)
    y = torch.tensor(np.asarray(targets, dtype=np.float32)) if targets is not None else None
    return Batch(*(torch.from_numpy(arrays[k]) for k in INPUT_NAMES), y)


def size_buckets(sizes: Sequence[int], batch_size: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Index batches of similar graph sizes (less padding); shuffled when ``rng`` is given."""
    order = np.argsort(np.asarray(sizes), kind="stable")
    if rng is not None:  # jitter so that batches differ between epochs
        noisy = np.asarray(sizes) * rng.uniform(0.9, 1.1, len(sizes))
        order = np.argsort(noisy, kind="stable")
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches
