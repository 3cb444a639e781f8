"""Which operators ONNX Runtime's CPU provider runs inside a neighbour's kernel, from a stored graph.

ONNX Runtime rewrites the graph before it runs it (level ``all``): Conv with its activation (and, in
the NCHWc layout, with a residual Add and the activation after it), MatMul with a constant bias Add (a
Gemm), MatMul with a scale (FusedMatMul), x * sigmoid(x) (QuickGelu), the Erf and Tanh forms of GELU,
RMS norms (SimplifiedLayerNormalization), Add before LayerNormalization (SkipLayerNormalization), a
zero Pad into the Conv after it, 1 / x times y as y / x; and it computes repeated operators once. A
fused group is one kernel: its inner tensors are never written to memory. The rules below find these
groups from what a dataset stores of a graph (op types, edges, how many inputs are activations), so
every dataset gets the features without re-exporting a model; ``measure.ort_fusions`` checks them
against the graph ONNX Runtime saves after optimising (``examples/check_fusion_rules.py``).
"""
from __future__ import annotations

import numpy as np

from narformer_tvm.graph.scalars import SCALARS

ACTIVATIONS = frozenset({"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid"})  # fused into Conv/Gemm
NCHWC_ACTIVATIONS = ACTIVATIONS | {"HardSwish"}  # the NCHWc Conv takes one more
_N_INPUTS, _LOG_PARAMS = SCALARS.index("n_inputs"), SCALARS.index("log_params")
SCALE = frozenset({"Mul", "Div"})


def _producers(t) -> list[list[int]]:
    prods: list[list[int]] = [[] for _ in t.ops]
    for s, d in t.edges:
        prods[int(d)].append(int(s))
    return prods


class _Graph:
    """Producers and consumers of each node (a duplicate ORT computes once replaced by the one it keeps),
    and the fused edges found so far."""

    def __init__(self, t):
        self.ops = t.ops
        self.n_in = t.scalars[:, _N_INPUTS]
        self.kept = kept = {i: group[0] for group in duplicate_groups(t) for i in group[1:]}  # duplicate -> the one computed
        edges = {(kept.get(int(s), int(s)), int(d)) for s, d in t.edges if int(d) not in kept}
        self.prods: list[list[int]] = [[] for _ in t.ops]
        self.cons: list[list[int]] = [[] for _ in t.ops]
        for s, d in sorted(edges):
            self.prods[d].append(s)
            self.cons[s].append(d)
        self.fused: set[tuple[int, int]] = set()

    def only(self, i: int, ops=None) -> int | None:
        """The single consumer of ``i`` (of one of ``ops``), or None."""
        if len(self.cons[i]) != 1:
            return None
        c = self.cons[i][0]
        return c if ops is None or self.ops[c] in ops else None

    def by_constant(self, i: int) -> bool:
        """An elementwise op whose second operand is a weight or constant (one activation input)."""
        return self.n_in[i] == 1 and len(self.prods[i]) == 1

    def fuse(self, *chain: int | None) -> None:
        for p, c in zip(chain, chain[1:]):
            self.fused.add((p, c))


def _conv_chains(g: _Graph, level: str) -> None:
    """Conv (BatchNormalization and a bias folded in) and MatMul with its bias (basic), then their
    activation and Gemm's (extended) or, in the NCHWc layout (all), a residual sum and the activation."""
    nchwc = level == "all"
    for i, op in enumerate(g.ops):
        if op not in ("Conv", "Gemm") and not (op == "MatMul" and g.n_in[i] == 1):
            continue
        if level == "basic" and op == "Gemm":  # its activation fusion is extended
            continue
        j = i
        if op == "MatMul":  # MatMulAddFusion: a constant bias Add makes it a Gemm
            if (c := g.only(j, {"Add"})) is None or not g.by_constant(c):
                continue
            g.fuse(j, c)
            if level == "basic":
                continue
            j = c
        while op == "Conv" and (c := g.only(j, {"BatchNormalization", "Add"})) is not None \
                and (g.ops[c] == "BatchNormalization" or g.by_constant(c)):  # folded into the weights, the bias
            g.fuse(j, c)
            j = c
        if level == "basic":
            continue
        if (c := g.only(j, NCHWC_ACTIVATIONS if nchwc and op == "Conv" else ACTIVATIONS)) is not None:
            g.fuse(j, c)
        elif op == "Conv" and nchwc and (c := g.only(j, {"Add"})) is not None and g.n_in[c] == 2:
            # The NCHWc Conv adds a residual into its output ("Sum"), then applies the activation.
            if any((p, c) in g.fused for p in g.prods[c]):
                continue
            g.fuse(j, c)
            if (a := g.only(c, NCHWC_ACTIVATIONS)) is not None:
                g.fuse(c, a)


def _pads(g: _Graph) -> None:
    """PadFusion: a zero Pad becomes the padding of the Conv or pool that reads it. (ORT leaves a Pad
    whose value input is omitted; the stored graph cannot tell, and exporters of real models write it.)"""
    for i, op in enumerate(g.ops):
        if op == "Pad" and (c := g.only(i, {"Conv", "MaxPool", "AveragePool"})) is not None:
            g.fuse(i, c)


def _div_muls(g: _Graph) -> None:
    """DivMulFusion: 1 / x times y becomes y / x (an RMS norm's reciprocal square root)."""
    for i, op in enumerate(g.ops):
        if op == "Div" and g.by_constant(i) and (c := g.only(i, {"Mul"})) is not None:
            g.fuse(i, c)


def _matmul_fusions(g: _Graph) -> None:
    """FusedMatMul: a product of two activations scaled by a constant."""
    for i, op in enumerate(g.ops):
        if op == "MatMul" and g.n_in[i] == 2 and (c := g.only(i, SCALE)) is not None and g.by_constant(c):
            g.fuse(i, c)


def _gelu_tail(g: _Graph, x: int, t: int) -> None:
    """From an Erf/Tanh: + 1, times x (or 0.5 x, computed first), then maybe times 0.5."""
    a = g.only(t, {"Add"})
    if a is None or not g.by_constant(a):
        return
    m = g.only(a, {"Mul"})
    if m is None:
        return
    g.fuse(t, a, m)
    for h in g.prods[m]:
        if h != a and g.ops[h] == "Mul" and g.by_constant(h) and g.prods[h] == [x] and g.only(h) == m:
            g.fuse(h, m)
    if (half := g.only(m, {"Mul"})) is not None and g.by_constant(half):
        g.fuse(m, half)


def _gelus(g: _Graph) -> None:
    for i, op in enumerate(g.ops):
        if op == "Erf" and len(g.prods[i]) == 1:  # x / sqrt(2) -> Erf
            d = g.prods[i][0]
            if g.ops[d] in SCALE and g.by_constant(d) and g.only(d) == i:
                g.fuse(d, i)
                _gelu_tail(g, g.prods[d][0], i)
        elif op == "Tanh" and len(g.prods[i]) == 1:  # x + 0.044715 x^3, times sqrt(2/pi) -> Tanh
            s = g.prods[i][0]
            if g.ops[s] != "Mul" or not g.by_constant(s) or g.only(s) != i or len(g.prods[s]) != 1:
                continue
            a = g.prods[s][0]
            if g.ops[a] != "Add" or g.n_in[a] != 2 or g.only(a) != s:
                continue
            for c in g.prods[a]:
                x = next((p for p in g.prods[a] if p != c), None)
                cube = g.prods[c][0] if g.ops[c] == "Mul" and g.by_constant(c) and g.prods[c] else None
                if x is None or cube is None or g.ops[cube] not in ("Pow", "Mul") or x not in g.prods[cube]:
                    continue
                g.fuse(cube, c, a, s, i)
                _gelu_tail(g, x, i)


def _quick_gelus(g: _Graph) -> None:
    """x * sigmoid(x)."""
    for i, op in enumerate(g.ops):
        if op == "Sigmoid" and len(g.prods[i]) == 1 and (m := g.only(i, {"Mul"})) is not None \
                and sorted(g.prods[m]) == sorted([i, g.prods[i][0]]):
            g.fuse(i, m)


def _norms(g: _Graph) -> None:
    for i, op in enumerate(g.ops):
        if op == "LayerNormalization":  # SkipLayerNormalization: the residual Add goes in
            for p in g.prods[i]:
                if g.ops[p] == "Add" and g.only(p) == i:
                    g.fuse(p, i)
        elif op == "ReduceMean" and len(g.prods[i]) == 1 and g.ops[g.prods[i][0]] in ("Pow", "Mul"):
            # x / sqrt(mean(x^2) + eps) * w: SimplifiedLayerNormalization
            chain = [g.prods[i][0], i]
            for ops in ({"Add"}, {"Sqrt"}, {"Div", "Reciprocal"}, {"Mul"}):
                c = g.only(chain[-1], ops)
                if c is None:
                    break
                chain.append(c)
            else:
                while (c := g.only(chain[-1], {"Cast"})) is not None:
                    chain.append(c)
                if (w := g.only(chain[-1], {"Mul"})) is not None and g.by_constant(w):
                    chain.append(w)
                g.fuse(*chain)


def duplicate_groups(t) -> list[list[int]]:
    """Groups of operators of a GraphTable that compute the same thing from the same inputs (same op,
    attributes and shapes, no weights): ORT's common-subexpression elimination computes each group once
    (e.g. a NAS cell's edges that each apply ReLU to the same node)."""
    prods = _producers(t)
    groups: dict[tuple, list[int]] = {}
    for i, op in enumerate(t.ops):
        if t.scalars[i, _LOG_PARAMS] or not prods[i]:  # weights may differ where the table cannot see them
            continue
        groups.setdefault((op, tuple(sorted(prods[i])), tuple(t.scalars[i].tolist())), []).append(i)
    return [idx for idx in groups.values() if len(idx) > 1]


LEVELS = ("basic", "extended", "all")  # ONNX Runtime's graph optimisation levels, each adding to the last


def _fused(t, level: str) -> _Graph:
    """The fused edges of a GraphTable at ONNX Runtime optimisation ``level``: basic folds Pads,
    BatchNormalization and bias Adds into convolutions, a reciprocal into the product after it, and
    makes a Gemm of a MatMul and its bias (of most: ORT leaves some that the stored graph cannot tell
    apart, BERT's attention projections);
    extended adds the activation, GELU, norm and MatMul fusions; all adds the CPU provider's NCHWc
    layout with its Conv + Add + activation fusion."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    g = _Graph(t)
    _pads(g)
    _div_muls(g)
    _conv_chains(g, level)
    if level != "basic":
        _matmul_fusions(g)
        _gelus(g)
        _quick_gelus(g)
        _norms(g)
    return g


def fused_edges(t, level: str = "all") -> set[tuple[int, int]]:
    """Edges (producer, consumer) of a GraphTable that ONNX Runtime runs inside one kernel at ``level``
    (see ``_fused``)."""
    return _fused(t, level).fused


def fusion_flags(t, level: str = "all") -> np.ndarray:
    """(N, 2) float32 per operator of a GraphTable: its output is never written to memory (it stays
    inside a fused kernel, or a duplicate is computed once); it reads an input from inside a fused
    kernel (one operator of that kernel, not its own)."""
    g = _fused(t, level)
    flags = np.zeros((len(t.ops), 2), dtype=np.float32)
    for p, c in g.fused:
        flags[p, 0] = flags[c, 1] = 1.0
    flags[sorted(g.kept), 0] = 1.0  # common-subexpression elimination runs at every level
    return flags
