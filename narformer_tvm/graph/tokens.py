"""Operator graph -> token features (NAR-Former V2's input encoding).

One token per operator: the op type (one-hot over ``VOCAB`` plus an "unknown" slot, or a
sinusoidal code of its index) followed by a fixed list of real-valued scalars (output and input
shapes, kernel, stride, padding, dilation, group, axis, cost counts), each encoded with sinusoids
of ``n_freqs`` frequencies (or kept as one raw log-scaled number, for the ablation).
"""
from __future__ import annotations

import json
import math
import struct
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from narformer_tvm.graph.fusion import fusion_flags
from narformer_tvm.graph.onnx_graph import OpGraph, OpNode
from narformer_tvm.graph.scalars import SCALARS

FEATURE_VERSION = 1  # bump when the encoding of a graph changes; checkpoints record it


# Every op type in the exported CNN/Transformer families, plus common quantisation and shape ops.
VOCAB: tuple[str, ...] = (
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "BatchNormalization", "LayerNormalization",
    "InstanceNormalization", "GroupNormalization", "LRN", "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid",
    "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu", "Elu", "Selu", "Celu", "Softplus", "Mish",
    "Softmax", "LogSoftmax", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Neg", "Abs",
    "Reciprocal", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Greater", "Less", "GreaterOrEqual",
    "LessOrEqual", "Not", "And", "Or", "Floor", "Ceil", "Round", "Sign", "Cast", "MaxPool", "AveragePool",
    "LpPool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin",
    "ReduceProd", "ReduceL2", "ArgMax", "ArgMin", "TopK", "CumSum", "Flatten", "Reshape", "Transpose",
    "Concat", "Split", "Slice", "Squeeze", "Unsqueeze", "Gather", "GatherElements", "GatherND",
    "ScatterND", "ScatterElements", "Expand", "Tile", "Pad", "Resize", "Upsample", "DepthToSpace",
    "SpaceToDepth", "Shape", "Size", "ConstantOfShape", "Range", "NonZero", "Trilu",
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
    "MatMulInteger", "ConvInteger", "QLinearAdd", "QLinearMul", "QLinearSigmoid",
    "QLinearGlobalAveragePool", "If", "Loop",
)


STATIC: tuple[str, ...] = ("log_batch", "log_macs", "log_flops", "log_params", "log_memory", "log_nodes")


LOG_SCALE = 16.0  # log2 quantities are multiplied by this before the sinusoid: 1/16 octave resolution


@dataclass(frozen=True)
class FeatureConfig:
    vocab: tuple[str, ...] = VOCAB  # op types with their own slot; the rest share "unknown"
    op_encoding: str = "onehot"  # "onehot" | "sinusoidal" (code of the vocabulary index)
    attr_encoding: str = "sinusoidal"  # "sinusoidal" | "raw" (one log-scaled number per scalar)
    n_freqs: int = 8  # frequencies per sinusoid-encoded scalar (each gives a sin and a cos)
    max_period: float = 10000.0  # slowest sinusoid's period, as in Transformer position codes
    fusion: bool = False  # two flags per operator: ONNX Runtime runs it inside a fused kernel (graph.fusion)
    version: int = FEATURE_VERSION

    def __post_init__(self):
        if self.op_encoding not in ("onehot", "sinusoidal"):
            raise ValueError(f"op_encoding must be onehot or sinusoidal, not {self.op_encoding!r}")
        if self.attr_encoding not in ("sinusoidal", "raw"):
            raise ValueError(f"attr_encoding must be sinusoidal or raw, not {self.attr_encoding!r}")

    @property
    def op_width(self) -> int:
        return len(self.vocab) + 1 if self.op_encoding == "onehot" else 2 * self.n_freqs

    @property
    def n_features(self) -> int:
        per = 2 * self.n_freqs if self.attr_encoding == "sinusoidal" else 1
        return self.op_width + per * len(SCALARS) + (2 if self.fusion else 0)

    @property
    def n_static(self) -> int:
        return len(STATIC)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["vocab"] = list(self.vocab)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        return cls(**{**d, "vocab": tuple(d["vocab"])})


@dataclass
class EncodedGraph:
    """Tensors for one graph, ready to batch."""

    x: np.ndarray  # (N, F) float32 token features
    edges: np.ndarray  # (E, 2) int64 directed edges (src, dst)
    static: np.ndarray  # (S,) float32 graph-level features
    name: str = ""
    cost: np.ndarray | None = None  # (N, 2) float32 per-operator (GFLOPs, GB of memory traffic)
    kind: np.ndarray | None = None  # (N,) int64 operator kind: KINDS index
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.x.shape[0]


def sinusoid(values: np.ndarray, n_freqs: int, max_period: float) -> np.ndarray:
    """(..., K) values -> (..., K * 2 * n_freqs): sin and cos at geometric frequencies."""
    freqs = max_period ** (-np.arange(n_freqs) / n_freqs)  # 1 ... 1/max_period
    angles = values[..., None] * freqs  # (..., K, n_freqs)
    enc = np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)
    return enc.reshape(*values.shape[:-1], -1)


def _fold4(shape: tuple[int, ...]) -> list[int]:
    """A shape as 4 numbers: left-aligned, trailing dims beyond the 4th multiplied into it."""
    dims = list(shape) if shape else [1]
    if len(dims) > 4:
        dims = dims[:3] + [math.prod(dims[3:])]
    return dims + [1] * (4 - len(dims))


def _log(v: float) -> float:
    return math.log2(1.0 + max(v, 0))


def node_scalars(node: OpNode) -> list[float]:
    """The raw scalar vector of one operator, in ``SCALARS`` order."""
    a = node.attrs
    out = node.output_shapes[0] if node.output_shapes else ()
    inp = node.input_shapes[0] if node.input_shapes else ()
    kernel = a.get("kernel", (0, 0))
    stride = a.get("stride", (0, 0))
    pad = a.get("pad", (0, 0))
    dil = a.get("dilation", (0, 0))
    axis = a.get("axis", 0)
    if isinstance(axis, int) and axis < 0:
        axis += len(inp) or 1
    axis = axis if isinstance(axis, int) else 0
    return [*_fold4(out), *_fold4(inp), kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1],
            dil[0], dil[1], a.get("group", 1) if isinstance(a.get("group", 1), int) else 1, axis,
            len(node.input_shapes), round(LOG_SCALE * _log(node.flops)), round(LOG_SCALE * _log(node.params)),
            round(LOG_SCALE * _log(node.memory))]


def unknown_ops(graph: OpGraph, vocab: tuple[str, ...] = VOCAB) -> Counter:
    known = set(vocab)
    return Counter(n.op_type for n in graph.nodes if n.op_type not in known)


def static_features(graph: OpGraph) -> np.ndarray:
    return np.array([math.log2(max(graph.batch_size, 1)), _log(graph.macs) / 10, _log(graph.flops) / 10,
                     _log(graph.params) / 10, _log(graph.memory) / 10, _log(len(graph.nodes)) / 4],
                    dtype=np.float32)


def static_count(value):
    """A count back from its static feature (log_macs, log_flops, log_params, log_memory): the inverse
    of ``_log(x) / 10``. Works on numpy arrays and torch tensors alike."""
    return 2.0 ** (10.0 * value) - 1.0


@dataclass
class GraphTable:
    """The compact form of a graph that training needs: stored in datasets instead of ONNX files."""

    ops: list[str]  # op type per node
    scalars: np.ndarray  # (N, len(SCALARS)) int64, node_scalars() per node
    edges: np.ndarray  # (E, 2) int64
    static: np.ndarray  # (S,) float32, static_features()
    name: str = ""

    @classmethod
    def empty(cls) -> "GraphTable":
        """The stored graph of a model whose graph could not be extracted."""
        return cls([], np.zeros((0, len(SCALARS)), dtype=np.int64), np.zeros((0, 2), dtype=np.int64),
                   np.zeros(len(STATIC), dtype=np.float32))

    def to_bytes(self) -> bytes:
        names = sorted(set(self.ops))
        index = {op: i for i, op in enumerate(names)}
        header = json.dumps({"ops": names, "n": len(self.ops), "e": len(self.edges), "k": self.scalars.shape[1],
                             "static": [float(v) for v in self.static]}).encode()
        body = b"".join([np.array([index[o] for o in self.ops], dtype=np.uint16).tobytes(),
                         self.scalars.astype(np.int64).tobytes(), self.edges.astype(np.int32).tobytes()])
        return struct.pack("<I", len(header)) + header + zlib.compress(body, 9)

    def digest(self) -> str:
        """Identity of the encoded graph (operators, attributes, shapes, edges, batch; not the name):
        two models with the same digest are the same input to every predictor."""
        import hashlib

        return hashlib.sha1(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, blob: bytes, name: str = "") -> "GraphTable":
        (hlen,) = struct.unpack("<I", blob[:4])
        h = json.loads(blob[4:4 + hlen])
        body = zlib.decompress(blob[4 + hlen:])
        n, e, k = h["n"], h["e"], h["k"]
        ops_idx = np.frombuffer(body, dtype=np.uint16, count=n)
        off = 2 * n
        scalars = np.frombuffer(body, dtype=np.int64, count=n * k, offset=off).reshape(n, k)
        off += 8 * n * k
        edges = np.frombuffer(body, dtype=np.int32, count=2 * e, offset=off).reshape(e, 2).astype(np.int64)
        return cls([h["ops"][i] for i in ops_idx], scalars.copy(), edges, np.array(h["static"], dtype=np.float32), name)


def table(graph: OpGraph) -> GraphTable:
    scalars = np.array([node_scalars(n) for n in graph.nodes], dtype=np.int64).reshape(len(graph.nodes), len(SCALARS))
    return GraphTable([n.op_type for n in graph.nodes], scalars, np.array(graph.edges, dtype=np.int64).reshape(-1, 2),
                      static_features(graph), graph.name)


def encode_table(t: GraphTable, cfg: FeatureConfig = FeatureConfig()) -> EncodedGraph:
    """Token features, edges and static features of one graph."""
    index = {op: i for i, op in enumerate(cfg.vocab)}
    unknown = len(cfg.vocab)
    ops = np.array([index.get(op, unknown) for op in t.ops], dtype=np.int64)
    if cfg.op_encoding == "onehot":
        op_feat = np.zeros((len(ops), unknown + 1), dtype=np.float32)
        op_feat[np.arange(len(ops)), ops] = 1.0
    else:
        op_feat = sinusoid(ops[:, None].astype(np.float64), cfg.n_freqs, cfg.max_period)
    scalars = t.scalars.astype(np.float64)
    if cfg.attr_encoding == "sinusoidal":
        attr_feat = sinusoid(scalars, cfg.n_freqs, cfg.max_period)
    else:
        attr_feat = np.log2(1.0 + np.abs(scalars)) / 8.0
    parts = [op_feat, attr_feat]
    if cfg.fusion:
        parts.append(fusion_flags(t, "all"))  # the level of the CPU profiles' configuration
    x = np.concatenate(parts, axis=1).astype(np.float32)
    return EncodedGraph(x=x, edges=t.edges, static=t.static, name=t.name, cost=node_costs(t), kind=node_kinds(t))


NODE_COSTS = [SCALARS.index("log_flops"), SCALARS.index("log_memory")]


# Operator kinds whose FLOPs and bytes run at their own rates: dense convolutions are compute-bound,
# grouped/depthwise ones memory-bound, the rest mostly elementwise and GEMMs.
KINDS = ("dense_conv", "grouped_conv", "other")


def node_costs(t: GraphTable) -> np.ndarray:
    """(N, 2) per-operator GFLOPs and GB read+written, back from the stored log scalars (to 1/16
    octave: ~4% per operator, errors that average out over a graph)."""
    v = t.scalars[:, NODE_COSTS].astype(np.float64)
    return ((2.0 ** (v / LOG_SCALE) - 1.0) / 1e9).astype(np.float32)


def node_kinds(t: GraphTable) -> np.ndarray:
    """(N,) index into KINDS of each operator."""
    conv = np.array(t.ops, dtype=object) == "Conv"
    grouped = conv & (t.scalars[:, SCALARS.index("group")] > 1)
    return np.where(grouped, 1, np.where(conv, 0, 2)).astype(np.int64)


def kind_counts(t: GraphTable) -> np.ndarray:
    """(2 * len(KINDS) + 2,) float64: GFLOPs and GB of each operator kind, the operator count, 1 (the
    features of the by-kind latency line)."""
    cost, kinds = node_costs(t).astype(np.float64), node_kinds(t)
    per_kind = [cost[kinds == k].sum(0) for k in range(len(KINDS))]
    return np.array([*np.concatenate(per_kind), float(len(t.ops)), 1.0])


def encode(graph: OpGraph, cfg: FeatureConfig = FeatureConfig()) -> EncodedGraph:
    return encode_table(table(graph), cfg)
