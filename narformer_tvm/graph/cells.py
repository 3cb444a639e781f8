"""NAS cells as graphs: NAS-Bench-201 architecture strings and NAS-Bench-101 (ops, adjacency) cells.

Operations are nodes (plus the cell's input and output nodes), data flow gives the directed edges,
and each token is the op type (one-hot) followed by a sinusoidal code of the node's position, as
NAR-Former encodes cells. The same ``NARFormer`` model then reads them (6 blocks, layer-wise readout).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from narformer_tvm.errors import InputError
from narformer_tvm.graph.tokens import EncodedGraph, sinusoid

CELL_OPS = ("input", "output", "none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3",
            "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3")


NB201_EDGE_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


NB101_CODES = {-1: "input", -2: "output", 0: "conv3x3-bn-relu", 1: "conv1x1-bn-relu", 2: "maxpool3x3"}


@dataclass
class Cell:
    ops: list[str]  # node op types, input first and output last
    edges: list[tuple[int, int]]  # (src, dst) data flow

    @property
    def n(self) -> int:
        return len(self.ops)


def parse_nb201(arch: str) -> list[tuple[str, int, int]]:
    """``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` -> [(op, from_node, to_node)] over nodes 0..3."""
    parts = arch.strip().strip("|").split("|+|")
    if len(parts) != 3:
        raise ValueError(f"not a NAS-Bench-201 cell string (3 node groups expected): {arch!r}")
    edges = []
    for to, part in enumerate(parts, start=1):
        toks = part.strip("|").split("|")
        if len(toks) != to:
            raise ValueError(f"node {to} needs {to} incoming edges in {arch!r}")
        for tok in toks:
            op, _, src = tok.partition("~")
            if op not in NB201_EDGE_OPS or not src.isdigit() or int(src) >= to:
                raise ValueError(f"bad edge {tok!r} in {arch!r}")
            edges.append((op, int(src), to))
    return edges


def nb201_input_reaches_output(arch: str) -> bool:
    """False for cells whose 'none' edges cut the input off: their network computes a constant, which
    ONNX Runtime folds away (nothing to run, nothing to measure)."""
    edges = [(s, d) for op, s, d in parse_nb201(arch) if op != "none"]
    alive = {0}
    for node in (1, 2, 3):
        if any(s in alive and d == node for s, d in edges):
            alive.add(node)
    return 3 in alive


def nb201_cell(arch: str, prune_none: bool = True) -> Cell:
    """Edges of the cell become op nodes; op (j->i) feeds every op leaving node i (or the output).

    With ``prune_none``, 'none' ops (which cut the edge) are dropped with their connections, so
    cells that compute the same function give the same graph up to node order.
    """
    cell_edges = [e for e in parse_nb201(arch) if not (prune_none and e[0] == "none")]
    ops = ["input"] + [op for op, _, _ in cell_edges] + ["output"]
    out_idx = len(ops) - 1
    edges = []
    for k, (op, src, dst) in enumerate(cell_edges, start=1):
        if src == 0:
            edges.append((0, k))
        for j, (_, src2, dst2) in enumerate(cell_edges, start=1):
            if dst2 == src:  # op j ends where op k starts
                edges.append((j, k))
        if dst == 3:
            edges.append((k, out_idx))
    return Cell(ops, sorted(set(edges)))


def nb101_cell(operations: list[int], adjacency: list[list[int]]) -> Cell:
    """Drop padding nodes (-3) and their rows/columns; adjacency row = source, column = destination."""
    keep = [i for i, o in enumerate(operations) if o != -3]
    try:
        ops = [NB101_CODES[operations[i]] for i in keep]
    except KeyError as e:
        raise ValueError(f"unknown NAS-Bench-101 op code {e.args[0]}") from None
    pos = {old: new for new, old in enumerate(keep)}
    edges = [(pos[i], pos[j]) for i in keep for j in keep if adjacency[i][j]]
    return Cell(ops, edges)


def permuted(cell: Cell, rng: np.random.Generator) -> Cell:
    """The same cell with its intermediate nodes relabelled (input and output stay first and last)."""
    inner = rng.permutation(np.arange(1, cell.n - 1))
    order = np.concatenate([[0], inner, [cell.n - 1]])
    new_pos = np.empty(cell.n, dtype=int)
    new_pos[order] = np.arange(cell.n)
    ops = [cell.ops[i] for i in order]
    edges = sorted((int(new_pos[s]), int(new_pos[d])) for s, d in cell.edges)
    return Cell(ops, edges)


def encode_cell(cell: Cell, n_freqs: int = 16, max_period: float = 100.0) -> EncodedGraph:
    """Op one-hot + sinusoidal code of the node position; one constant static feature."""
    index = {op: i for i, op in enumerate(CELL_OPS)}
    onehot = np.zeros((cell.n, len(CELL_OPS)), dtype=np.float32)
    onehot[np.arange(cell.n), [index[o] for o in cell.ops]] = 1.0
    pos = sinusoid(np.arange(cell.n, dtype=np.float64)[:, None], n_freqs, max_period).astype(np.float32)
    return EncodedGraph(x=np.concatenate([onehot, pos], axis=1), edges=np.array(cell.edges, dtype=np.int64).reshape(-1, 2),
                        static=np.ones(1, dtype=np.float32))


def cell_features(n_freqs: int = 16) -> int:
    return len(CELL_OPS) + 2 * n_freqs


@dataclass
class CellData:
    cells: list[Cell]
    accuracy: np.ndarray  # fraction in (0, 1]
    names: list[str]


def load_nb201(path: str | Path, column: str = "CIFAR10TestAccuracy200Epochs") -> CellData:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file", hint="pass ../shared/data/nasbench201_accuracy.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or column not in rows[0] or "ArchitectureString" not in rows[0]:
        raise InputError(f"{path}: expected columns ArchitectureString and {column}")
    cells = [nb201_cell(r["ArchitectureString"]) for r in rows]
    return CellData(cells, np.array([float(r[column]) / 100.0 for r in rows]), [r["ArchitectureString"] for r in rows])


def load_nb101(path: str | Path) -> CellData:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file", hint="pass ../shared/data/nasbench101_1k.json")
    rows = json.loads(path.read_text())
    cells = [nb101_cell(r["operations"], r["adjacency"]) for r in rows]
    return CellData(cells, np.array([float(r["validation_accuracy_108"]) for r in rows]), [r["key"] for r in rows])


def load_benchmark(benchmark: str, path: str | Path) -> CellData:
    if benchmark == "nb201":
        return load_nb201(path)
    if benchmark == "nb101":
        return load_nb101(path)
    raise InputError(f"unknown benchmark {benchmark!r}", hint="use nb201 or nb101")
