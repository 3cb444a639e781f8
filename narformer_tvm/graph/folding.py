"""Constant folding of shape bookkeeping (Shape -> Gather -> Concat chains) so that shapes are static."""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

# Nodes that are never folded even with constant inputs (random or stateful).
NO_FOLD = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
           "Bernoulli", "If", "Loop", "Scan"}


FOLD_MAX_ELEMENTS = 1 << 16  # larger tensors are weights, not shape bookkeeping: never folded


MAX_FOLD_PASSES = 64


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    return shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes = {}
    g = model.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            if all(d >= 0 for d in dims):
                shapes[vi.name] = tuple(dims)
    for t in g.initializer:
        shapes[t.name] = tuple(t.dims)
    return shapes


def _initializer_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {}
    for t in model.graph.initializer:
        if math.prod(t.dims) <= FOLD_MAX_ELEMENTS:  # larger ones were stripped of their data
            try:
                values[t.name] = numpy_helper.to_array(t)
            except Exception:  # malformed tensor data: treat as not constant
                continue
    return values


def _fold_pass(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Evaluate every node whose inputs are all known constants; return the new model and count."""
    g = model.graph
    shapes = _static_shapes(model)
    known = _initializer_values(model)
    graph_outputs = {o.name for o in g.output}
    folded: dict[str, np.ndarray] = {}
    to_eval: list[onnx.NodeProto] = []
    const_names = set(known)
    fold_ids: set[int] = set()
    for i, node in enumerate(g.node):
        if node.domain not in ("", "ai.onnx") or node.op_type in NO_FOLD:
            continue
        if any(o in graph_outputs for o in node.output):
            continue
        if node.op_type == "Constant":
            try:
                folded[node.output[0]] = numpy_helper.to_array(
                    onnx.helper.get_attribute_value(node.attribute[0])) if node.attribute[0].name == "value" \
                    else np.asarray(onnx.helper.get_attribute_value(node.attribute[0]))
            except Exception:
                continue
            const_names.add(node.output[0])
            fold_ids.add(i)
        elif node.op_type in ("Shape", "Size") and node.input and node.input[0] in shapes:
            shape = shapes[node.input[0]]
            if node.op_type == "Size":
                value = np.array(math.prod(shape), dtype=np.int64)
            else:
                attrs = {a.name: a.i for a in node.attribute}
                r = len(shape)
                start, end = attrs.get("start", 0), attrs.get("end", r)
                value = np.array(shape[slice(start, end)], dtype=np.int64)
            folded[node.output[0]] = value
            const_names.add(node.output[0])
            fold_ids.add(i)
        elif node.input and all(x == "" or x in const_names for x in node.input):
            out_elems = [math.prod(shapes[o]) for o in node.output if o in shapes]
            if any(n > FOLD_MAX_ELEMENTS for n in out_elems):
                continue
            to_eval.append(node)
            const_names.update(o for o in node.output if o)
            fold_ids.add(i)
    if not fold_ids:
        return model, 0
    if to_eval:
        values = {**known, **folded}
        try:
            folded.update(_evaluate(to_eval, values, model))
        except Exception:
            # One node the reference runtime cannot evaluate would leave the whole chain unfolded (a
            # transformer export's position ids, say): evaluate node by node and keep what works.
            failed: set[str] = set()
            for node in to_eval:
                if any(x in failed for x in node.input):
                    failed.update(node.output)
                    continue
                try:
                    out = _evaluate([node], {**values, **folded}, model)
                except Exception:
                    failed.update(node.output)
                    continue
                folded.update(out)
            fold_ids -= {i for i, n in enumerate(g.node) if n in to_eval and any(o in failed for o in n.output)}
    consumers = {x for i, n in enumerate(g.node) if i not in fold_ids for x in n.input}
    # np.array, not np.ascontiguousarray: the latter turns 0-d scalars into 1-d arrays

    new_inits = [numpy_helper.from_array(np.array(v, order="C"), name) for name, v in folded.items()
                 if name in consumers]
    keep = [n for i, n in enumerate(g.node) if i not in fold_ids]
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(new_inits)
    # Drop stale value_info of folded tensors; shape inference recomputes the rest.
    del g.value_info[:]
    return model, len(fold_ids)


def _evaluate(nodes: list[onnx.NodeProto], values: dict[str, np.ndarray], model: onnx.ModelProto) -> dict:
    """The outputs of ``nodes``, whose inputs are all in ``values``, by ONNX's reference runtime."""
    from onnx.reference import ReferenceEvaluator

    needed = {x for n in nodes for x in n.input if x}
    produced = {o for n in nodes for o in n.output}
    inits = [numpy_helper.from_array(v if isinstance(v, np.ndarray) else np.asarray(v), name)
             for name, v in values.items() if name in needed and name not in produced]
    outputs = [onnx.helper.make_empty_tensor_value_info(o) for n in nodes for o in n.output if o]
    sub = onnx.helper.make_model(onnx.helper.make_graph(nodes, "fold", [], outputs, inits),
                                 opset_imports=model.opset_import)
    sub.ir_version = model.ir_version
    results = ReferenceEvaluator(sub).run(None, {})
    return {vi.name: np.asarray(value) for vi, value in zip(outputs, results)}


def _fold(model: onnx.ModelProto) -> onnx.ModelProto:
    model = _infer(model)
    for _ in range(MAX_FOLD_PASSES):  # each fold can make new shapes static, exposing more folds
        model, n = _fold_pass(model)
        model = _infer(model)
        if n == 0:
            break
    return model
