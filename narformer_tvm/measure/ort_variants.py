"""Model variants ONNX Runtime can run: ORT-optimised, dynamic and static int8, fp16."""
from __future__ import annotations

from pathlib import Path

from narformer_tvm.errors import InputError

VARIANTS = ("fp32", "ort-optimized", "int8-dynamic", "int8-dynamic-matmul", "int8-qdq", "fp16")

# Variants whose numerics differ from the fp32 model beyond float rounding: opt-in, and checked.
LOSSY = frozenset({"int8-dynamic", "int8-dynamic-matmul", "int8-qdq", "fp16"})

# The kind a variant is to the configuration-aware predictor (its one-hot); the graph shows the rest.
KIND = {"int8-dynamic-matmul": "int8-dynamic"}
KINDS = ("fp32", "ort-optimized", "int8-dynamic", "int8-qdq", "fp16")


def _calibration_reader(path: str, input_shapes: dict | None, batch_size: int | None, feeds: list | None = None):
    from onnxruntime.quantization import CalibrationDataReader

    if feeds is None:  # the same random samples the output check uses when the user gives no data
        from narformer_tvm.measure.eval_data import random_data

        feeds = random_data(path, input_shapes, batch_size).feeds

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    return Reader()


def _preprocess(src: str, out: Path) -> str:
    """ONNX Runtime's recommended pre-quantisation step (shape inference, graph clean-up)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(src, str(out), skip_symbolic_shape=True)
        return str(out)
    except Exception:  # some exports defeat it; quantising the original still works
        return src


def applies(src: str | Path, variant: str) -> bool:
    """Whether ``variant`` is a different model from ``src`` (int8-dynamic-matmul needs MatMuls)."""
    if variant != "int8-dynamic-matmul":
        return True
    import onnx

    return any(n.op_type == "MatMul" for n in onnx.load(str(src), load_external_data=False).graph.node)


def make_variant(src: str | Path, variant: str, out: str | Path, input_shapes: dict | None = None,
                 batch_size: int | None = None, target: str = "llvm", calibration: list | None = None) -> Path:
    """Write ``variant`` of the ONNX model ``src`` to ``out`` (fp32: ``src`` itself) and return its path.
    ``calibration``: input feeds for static quantisation (default: eval_data.random_data's)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime import quantization as q

    from narformer_tvm.measure.ort_session import PROVIDERS

    src, out = str(src), Path(out)
    if variant not in VARIANTS:
        raise InputError(f"unknown model variant {variant!r}", hint=f"use one of {', '.join(VARIANTS)}")
    if variant == "fp32":
        return Path(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    if variant == "ort-optimized":
        # "extended" is the highest level whose saved graph stays portable across CPUs.
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(out)
        so.log_severity_level = 3
        ort.InferenceSession(src, so, providers=[PROVIDERS[target]])
    elif variant == "int8-dynamic":
        q.quantize_dynamic(_preprocess(src, out.with_suffix(".pre.onnx")), str(out), weight_type=q.QuantType.QInt8)
    elif variant == "int8-dynamic-matmul":  # transformers: only the MatMuls, convolutions stay fp32
        if not applies(src, variant):
            raise InputError(f"{src}: no MatMul to quantise", hint="int8-dynamic-matmul applies to transformer models")
        q.quantize_dynamic(_preprocess(src, out.with_suffix(".pre.onnx")), str(out), weight_type=q.QuantType.QInt8,
                           op_types_to_quantize=["MatMul"])
    elif variant == "int8-qdq":
        pre = _preprocess(src, out.with_suffix(".pre.onnx"))
        q.quantize_static(pre, str(out), _calibration_reader(pre, input_shapes, batch_size, calibration),
                          quant_format=q.QuantFormat.QDQ, activation_type=q.QuantType.QUInt8,
                          weight_type=q.QuantType.QInt8)
    elif variant == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16
        from onnxruntime.transformers.onnx_model import OnnxModel

        model = OnnxModel(convert_float_to_float16(onnx.load(src), keep_io_types=True))
        model.topological_sort()  # the converter appends its input casts last
        onnx.save(model.model, str(out))
    out.with_suffix(".pre.onnx").unlink(missing_ok=True)
    return out


def graph_source(src: str | Path, variant_path: str | Path, variant: str) -> str:
    """The file whose graph the predictor reads for a variant. ORT's optimised graph is made of
    contrib ops (FusedConv, ...) that ONNX shape inference cannot see through, so it is read as its
    source; the variant token tells the two apart."""
    return str(src if variant == "ort-optimized" else variant_path)
