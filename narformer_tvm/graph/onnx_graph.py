"""ONNX model -> operator graph.

``load_model`` reads and validates an ONNX file, fixes its input shapes and folds the shape
bookkeeping that exporters emit (Shape/Gather/Concat chains feeding Reshape, Constant nodes), so
that ``build_graph`` sees one node per real layer with static shapes. Each ``OpNode`` carries its
attributes, shapes and cost counts (MACs, FLOPs, parameters, memory traffic); ``OpGraph`` adds the
directed edges and graph-level totals. ``features.py`` turns an ``OpGraph`` into tensors.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from narformer_tvm.errors import InputShapeError, ModelLoadError, UnsupportedOpsetError
from narformer_tvm.graph.folding import FOLD_MAX_ELEMENTS, _fold, _static_shapes

MIN_OPSET, MAX_OPSET = 7, 24  # default-domain opsets whose shape inference onnx implements


# Nodes that only forward their input at inference time: removed, their consumers rewired.
PASS_THROUGH = {"Identity", "Dropout"}


DTYPE_BYTES = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.BFLOAT16: 2,
               onnx.TensorProto.DOUBLE: 8, onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT8: 1,
               onnx.TensorProto.INT16: 2, onnx.TensorProto.UINT16: 2, onnx.TensorProto.INT32: 4,
               onnx.TensorProto.INT64: 8, onnx.TensorProto.BOOL: 1}


@dataclass
class OpNode:
    """One compute operator with static shapes and cost counts."""

    name: str
    op_type: str
    input_shapes: list[tuple[int, ...]]  # shapes of non-constant inputs (activations)
    output_shapes: list[tuple[int, ...]]
    attrs: dict[str, int | float | tuple] = field(default_factory=dict)
    weight_shapes: list[tuple[int, ...]] = field(default_factory=list)  # constant inputs
    macs: int = 0  # multiply-accumulates (conv, gemm, matmul)
    flops: int = 0  # 2*macs + elementwise work
    params: int = 0  # parameters first used by this node (shared weights counted once)
    memory: int = 0  # bytes read and written (activations and weights)

    def to_dict(self) -> dict:
        return {"name": self.name, "op": self.op_type,
                "in": [list(s) for s in self.input_shapes], "out": [list(s) for s in self.output_shapes],
                "w": [list(s) for s in self.weight_shapes],
                "attrs": {k: list(v) if isinstance(v, tuple) else v for k, v in self.attrs.items()},
                "macs": self.macs, "flops": self.flops, "params": self.params, "memory": self.memory}

    @classmethod
    def from_dict(cls, d: dict) -> "OpNode":
        return cls(name=d["name"], op_type=d["op"], input_shapes=[tuple(s) for s in d["in"]],
                   output_shapes=[tuple(s) for s in d["out"]], weight_shapes=[tuple(s) for s in d["w"]],
                   attrs={k: tuple(v) if isinstance(v, list) else v for k, v in d["attrs"].items()},
                   macs=d["macs"], flops=d["flops"], params=d["params"], memory=d["memory"])


@dataclass
class OpGraph:
    """A network as operators (topological order) and directed edges between them."""

    name: str
    nodes: list[OpNode]
    edges: list[tuple[int, int]]  # (producer index, consumer index)
    batch_size: int = 1
    opset: int = 0

    @property
    def macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    @property
    def flops(self) -> int:
        return sum(n.flops for n in self.nodes)

    @property
    def params(self) -> int:
        return sum(n.params for n in self.nodes)

    @property
    def memory(self) -> int:
        return sum(n.memory for n in self.nodes)

    def op_histogram(self) -> Counter:
        return Counter(n.op_type for n in self.nodes)

    def to_dict(self) -> dict:
        return {"name": self.name, "batch_size": self.batch_size, "opset": self.opset,
                "nodes": [n.to_dict() for n in self.nodes], "edges": [list(e) for e in self.edges]}

    @classmethod
    def from_dict(cls, d: dict) -> "OpGraph":
        return cls(name=d["name"], nodes=[OpNode.from_dict(n) for n in d["nodes"]],
                   edges=[tuple(e) for e in d["edges"]], batch_size=d["batch_size"], opset=d["opset"])


def parse_input_shapes(specs: list[str] | tuple[str, ...] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``name=1x3x224x224`` strings (the CLI's --input-shape) into a dict."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs or ():
        name, sep, dims = spec.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
            if not sep or not name or any(d <= 0 for d in shape):
                raise ValueError
        except ValueError:
            raise ModelLoadError(f"bad --input-shape {spec!r}",
                                 hint="write it as NAME=DIMxDIMx..., e.g. input=1x3x224x224") from None
        shapes[name] = shape
    return shapes


def _read_proto(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file", hint="check the path")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, not an ONNX file",
                             hint="pass the .onnx file itself")
    data = path.read_bytes()
    if not data:
        raise ModelLoadError(f"{path}: file is empty", hint="re-export the model")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf raises DecodeError, RuntimeError or ValueError by version
        raise ModelLoadError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})",
                             hint="the file may be truncated or not ONNX; re-export it") from None
    return model


def _strip_weights(model: onnx.ModelProto) -> None:
    """Drop the data of large initializers (and forget external files): only their shapes matter,
    and shape inference on a weight-less copy is much faster."""
    for t in model.graph.initializer:
        if math.prod(t.dims) > FOLD_MAX_ELEMENTS or t.data_location == onnx.TensorProto.EXTERNAL:
            for f in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                      "string_data", "external_data"):
                t.ClearField(f)
            t.data_location = onnx.TensorProto.DEFAULT


def _opset(model: onnx.ModelProto, source: str) -> int:
    versions = {o.domain: o.version for o in model.opset_import}
    version = versions.get("", versions.get("ai.onnx"))
    if version is None:
        raise ModelLoadError(f"{source}: declares no ONNX (default domain) opset",
                             hint="the file may be truncated or not a standard ONNX model")
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise UnsupportedOpsetError(
            f"{source}: opset {version} is not supported (supported: {MIN_OPSET}-{MAX_OPSET})",
            hint="convert it with onnx.version_converter.convert_version(model, 17)")
    return version


def _fix_input_shapes(model: onnx.ModelProto, source: str, overrides: dict[str, tuple[int, ...]],
                      batch_size: int | None) -> int:
    """Write static dims into the model's inputs; return the batch size."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    names = [i.name for i in inputs]
    for name in overrides:
        if name not in names:
            raise InputShapeError(f"{source}: --input-shape names {name!r}, which is not a model input",
                                  hint=f"model inputs: {', '.join(names) or 'none'}")
    batch = None
    for inp in inputs:
        if not inp.type.HasField("tensor_type"):
            raise ModelLoadError(f"{source}: input {inp.name!r} is not a tensor",
                                 hint="only tensor inputs are supported")
        tt = inp.type.tensor_type
        if inp.name in overrides:
            shape = overrides[inp.name]
            declared = len(tt.shape.dim) if tt.HasField("shape") else len(shape)
            if declared != len(shape):
                raise InputShapeError(
                    f"{source}: input {inp.name!r} has {declared} dimensions, --input-shape gives {len(shape)}",
                    hint=f"give all {declared} dimensions, e.g. --input-shape {inp.name}="
                         + "x".join(["N"] * declared))
            tt.ClearField("shape")
            for d in shape:
                tt.shape.dim.add().dim_value = d
        elif not tt.HasField("shape"):
            raise InputShapeError(f"{source}: input {inp.name!r} has no shape",
                                  hint=f"give it with --input-shape {inp.name}=1x3x224x224")
        dims = tt.shape.dim
        for k, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            label = dim.dim_param or "?"
            if k == 0 and len(dims) > 1:  # a symbolic leading dim is the batch dimension
                dim.Clear()
                dim.dim_value = batch_size or 1
                continue
            shown = "x".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                             for d in dims)
            raise InputShapeError(
                f"{source}: input {inp.name!r} has dynamic dimension {k} ({label!r}) in shape {shown}",
                hint=f"fix it with --input-shape {inp.name}=" + "x".join(
                    str(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else "N" for d in dims))
        if batch is None and len(dims) > 1:
            batch = dims[0].dim_value
    return batch or 1


def load_model(source: str | os.PathLike | onnx.ModelProto, input_shapes: dict | None = None,
               batch_size: int | None = None) -> tuple[onnx.ModelProto, int, int]:
    """Read, validate and statically shape an ONNX model.

    Returns ``(model, opset, batch_size)``: a shape-inferred copy with bookkeeping folded away.
    A symbolic leading input dimension is taken as the batch and set to ``batch_size`` (default 1).
    """
    if isinstance(source, onnx.ModelProto):
        label = source.graph.name or "<in-memory model>"
        model = onnx.ModelProto()
        model.CopyFrom(source)
    else:
        label = str(source)
        model = _read_proto(Path(source))
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelLoadError(f"{label}: the graph has no nodes",
                             hint="the file may be truncated, or the model is empty")
    opset = _opset(model, label)
    _strip_weights(model)
    batch = _fix_input_shapes(model, label, input_shapes or {}, batch_size)
    try:
        model = _fold(model)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
        raise ModelLoadError(f"{label}: shape inference failed: {str(e).splitlines()[0]}",
                             hint="the model may be invalid; check it with onnx.checker.check_model") from None
    return model, opset, batch


def _attr_dict(node: onnx.NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        if a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.FLOAT):
            out[a.name] = onnx.helper.get_attribute_value(a)
        elif a.type in (onnx.AttributeProto.INTS, onnx.AttributeProto.FLOATS):
            out[a.name] = tuple(onnx.helper.get_attribute_value(a))
        elif a.type == onnx.AttributeProto.STRING:
            out[a.name] = a.s.decode(errors="replace")
    return out


def _spatial_attrs(op: str, attrs: dict, x: tuple, w: tuple | None, y: tuple) -> dict:
    """Normalise kernel/stride/pad/dilation/group to 2-D pairs (1-D ops get a trailing 1)."""
    nsp = max(len(y) - 2, 1)
    kernel = attrs.get("kernel_shape") or (tuple(w[2:]) if w and len(w) > 2 else None)
    out = {}
    if kernel is None and op.startswith("Global") and len(x) > 2:
        kernel = tuple(x[2:])
    if kernel is not None:
        pad2 = lambda v: (tuple(v) + (1, 1))[:2]  # noqa: E731
        strides = attrs.get("strides") or (1,) * nsp
        dil = attrs.get("dilations") or (1,) * nsp
        pads = attrs.get("pads")
        if pads:
            half = len(pads) // 2
            tot = tuple(pads[i] + pads[i + half] for i in range(half))
        elif str(attrs.get("auto_pad", "NOTSET")).startswith("SAME") and len(x) > 2 and len(y) > 2:
            tot = tuple(max((yo - 1) * s + (k - 1) * d + 1 - xi, 0)
                        for xi, yo, k, s, d in zip(x[2:], y[2:], kernel, strides, dil))
        else:
            tot = (0,) * nsp
        out.update(kernel=pad2(kernel), stride=pad2(strides), pad=(tuple(tot) + (0, 0))[:2],
                   dilation=pad2(dil))
    if "group" in attrs:
        out["group"] = attrs["group"]
    return out


ELEMENTWISE_COST = {  # FLOPs per output element
    "Relu": 1, "LeakyRelu": 2, "PRelu": 2, "Clip": 1, "Sigmoid": 4, "HardSigmoid": 3, "HardSwish": 4,
    "Tanh": 4, "Erf": 8, "Gelu": 8, "Elu": 4, "Selu": 4, "Softplus": 4, "Mish": 8, "Swish": 5,
    "Add": 1, "Sub": 1, "Mul": 1, "Div": 1, "Pow": 4, "Sqrt": 4, "Exp": 4, "Log": 4, "Neg": 1,
    "Abs": 1, "Reciprocal": 1, "Max": 1, "Min": 1, "Where": 1, "Equal": 1, "Greater": 1, "Less": 1,
    "Not": 1, "And": 1, "Or": 1, "Cast": 1, "BatchNormalization": 2, "InstanceNormalization": 5,
    "LayerNormalization": 5, "GroupNormalization": 5, "Softmax": 3, "LogSoftmax": 4, "Resize": 4,
    "Upsample": 4, "Sign": 1, "Floor": 1, "Ceil": 1, "Round": 1, "ThresholdedRelu": 1, "Celu": 4,
}


def _costs(op: str, ins: list[tuple], outs: list[tuple], all_inputs: list[tuple | None], spatial: dict,
           attrs: dict) -> tuple[int, int]:
    """(MACs, FLOPs) of one operator from its shapes."""
    y = outs[0] if outs else ()
    ny = math.prod(y) if outs else 0
    macs = 0
    extra = 0
    if op in ("Conv", "ConvInteger", "QLinearConv") and len(all_inputs) > 1 and all_inputs[1]:
        w = all_inputs[1]
        macs = ny * math.prod(w[1:])  # Cin/group * kernel
        if len(all_inputs) > 2 and all_inputs[2]:
            extra = ny
    elif op == "ConvTranspose" and all_inputs and all_inputs[0] and len(all_inputs) > 1 and all_inputs[1]:
        x, w = all_inputs[0], all_inputs[1]
        macs = math.prod(x) * math.prod(w[1:])  # each input pixel scatters Cout/group * kernel
    elif op == "Gemm" and len(all_inputs) > 1 and all_inputs[0] and all_inputs[1]:
        a = all_inputs[0]
        k = a[0] if attrs.get("transA", 0) else a[-1]
        macs = ny * k
        if len(all_inputs) > 2 and all_inputs[2]:
            extra = ny
    elif op in ("MatMul", "MatMulInteger", "QLinearMatMul") and all_inputs and all_inputs[0]:
        macs = ny * all_inputs[0][-1]
    elif op in ("MaxPool", "AveragePool", "LpPool") and "kernel" in spatial:
        extra = ny * math.prod(spatial["kernel"])
    elif op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax",
                "ReduceMin", "ReduceL2", "ReduceProd", "ArgMax", "ArgMin") and ins:
        extra = math.prod(ins[0])
    elif op in ELEMENTWISE_COST:
        extra = ny * ELEMENTWISE_COST[op]
    return macs, 2 * macs + extra


def _dtype_sizes(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    sizes = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        sizes[vi.name] = DTYPE_BYTES.get(vi.type.tensor_type.elem_type, 4)
    for t in g.initializer:
        sizes[t.name] = DTYPE_BYTES.get(t.data_type, 4)
    return sizes


def _data_inputs(model: onnx.ModelProto) -> set[str]:
    """Graph inputs that carry data, not weights.

    Normally every weight is an initializer. A model exported without its weights
    (``export_params=False``) lists them as graph inputs after the data inputs; the first input read
    as a layer's parameter (Conv weight, Gemm B, normalisation scale) marks where the weights start.
    """
    g = model.graph
    inits = {t.name for t in g.initializer}
    inputs = [i.name for i in g.input if i.name not in inits]
    weight_slots = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "BatchNormalization": 1,
                    "LayerNormalization": 1, "InstanceNormalization": 1, "PRelu": 1}
    as_weight = {x for n in g.node if n.op_type in weight_slots for x in n.input[weight_slots[n.op_type]:]}
    first = next((k for k, x in enumerate(inputs) if x in as_weight), len(inputs))
    return set(inputs[:max(first, 1)])


def build_graph(source: str | os.PathLike | onnx.ModelProto, input_shapes: dict | None = None,
                batch_size: int | None = None, name: str | None = None) -> OpGraph:
    """Load an ONNX model and return its operator graph."""
    label = name or (Path(source).stem if not isinstance(source, onnx.ModelProto)
                     else (source.graph.name or "model"))
    where = source.graph.name or "<in-memory model>" if isinstance(source, onnx.ModelProto) else str(source)
    try:
        model, opset, batch = load_model(source, input_shapes, batch_size)
        return _build(model, opset, batch, label)
    except ModelLoadError:
        raise
    except Exception as e:  # a malformed model can break onnx or us anywhere: report, don't crash
        raise ModelLoadError(f"{where}: cannot analyse the model ({type(e).__name__}: {str(e)[:200]})",
                             hint="check it with onnx.checker.check_model(model, full_check=True)") from None


def _build(model: onnx.ModelProto, opset: int, batch: int, label: str) -> OpGraph:
    g = model.graph
    shapes = _static_shapes(model)
    dsize = _dtype_sizes(model)
    data_inputs = _data_inputs(model)
    weights = {t.name for t in g.initializer} | {i.name for i in g.input if i.name not in data_inputs}

    alias: dict[str, str] = {}  # output of a pass-through node -> its source tensor
    producer: dict[str, int] = {}
    nodes: list[OpNode] = []
    edges: set[tuple[int, int]] = set()
    counted: set[str] = set()
    data = set(data_inputs)  # tensors computed from the model's inputs
    folded: dict[str, int] = {}  # input-independent tensor -> parameters it was computed from

    def take_params(xs) -> int:
        n = 0
        for x in xs:
            if x and x in weights and x not in counted:
                counted.add(x)
                n += folded[x] if x in folded else math.prod(shapes.get(x, ()))
        return n

    for k, node in enumerate(g.node):
        inputs = [alias.get(x, x) for x in node.input]
        if node.op_type in PASS_THROUGH and inputs and inputs[0]:
            for o in node.output[:1]:
                alias[o] = inputs[0]
            continue
        if not any(x in data for x in inputs):
            # Computed from weights and constants alone (e.g. a branch fed only a NAS cell's zeros,
            # too large for the bookkeeping fold above): runtimes fold it once at load time, so it
            # costs nothing per run. Its result becomes a weight of the layers that read it.
            outs = [o for o in node.output if o]
            weights.update(outs)
            if outs:
                folded[outs[0]] = take_params(inputs)
                folded.update((o, 0) for o in outs[1:])
            continue
        data.update(o for o in node.output if o)
        attrs = _attr_dict(node)
        all_in = [shapes.get(x) if x else None for x in inputs]
        act = [shapes.get(x, ()) for x in inputs if x and x not in weights]
        wts = [shapes.get(x, ()) for x in inputs if x and x in weights]
        outs = [shapes.get(o, ()) for o in node.output if o]
        spatial = _spatial_attrs(node.op_type, attrs, act[0] if act else (),
                                 all_in[1] if len(all_in) > 1 else None, outs[0] if outs else ())
        for key in ("axis", "perm", "axes", "transA", "transB", "mode", "keepdims", "epsilon", "alpha"):
            if key in attrs:
                spatial[key] = attrs[key]
        macs, flops = _costs(node.op_type, act, outs, all_in, spatial, attrs)
        params = take_params(inputs)
        memory = sum(math.prod(shapes.get(x, ())) * dsize.get(x, 4) for x in inputs if x and x in shapes)
        memory += sum(math.prod(shapes.get(o, ())) * dsize.get(o, 4) for o in node.output if o in shapes)
        idx = len(nodes)
        nodes.append(OpNode(name=node.name or f"{node.op_type}_{k}", op_type=node.op_type,
                            input_shapes=act, output_shapes=outs, attrs=spatial, weight_shapes=wts,
                            macs=macs, flops=flops, params=params, memory=memory))
        for x in inputs:
            if x in producer:
                edges.add((producer[x], idx))
        for o in node.output:
            if o:
                producer[o] = idx
    if not nodes:
        raise ModelLoadError(f"{label}: the output does not depend on any input: every operator is constant "
                             "and runtimes fold the whole model away, so there is no latency to predict",
                             hint="check that the model's input reaches its output (e.g. a NAS cell of only 'none' edges)")
    return OpGraph(name=label, nodes=nodes, edges=sorted(edges), batch_size=batch, opset=opset)
