"""Output fidelity: does a model variant under given session options still compute what the fp32 model does?

The reference is the original model with graph optimisations off (its plain fp32 semantics). The
default metric is the worst relative L2 error of any output on any sample; where an output looks like
class scores (2-D, batch x classes) the top-1 agreement must also stay within the tolerance. A user
metric (``module:function``) replaces it: called as ``fn(inputs, reference, outputs)`` with lists per
sample, it returns True/False, or a number read as a deviation and held to the same tolerance.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from narformer_tvm.errors import InputError

DEFAULT_MAX_ERROR = 0.01  # relative L2 error of outputs: fp32 rounding passes, most int8 does not


@dataclass
class Fidelity:
    passed: bool
    rel_error: float | None = None  # worst ||y - y_ref|| / ||y_ref|| over outputs and samples
    cosine: float | None = None  # worst cosine similarity
    top1: float | None = None  # argmax agreement, where an output looks like class scores
    user_value: float | bool | None = None  # what the user's metric returned
    error: str | None = None  # the candidate could not run

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        if self.error:
            return f"failed to run: {self.error}"
        parts = [f"rel. error {self.rel_error:.2e}", f"cosine {self.cosine:.5f}"]
        if self.top1 is not None:
            parts.append(f"top-1 agreement {100 * self.top1:.0f}%")
        if self.user_value is not None:
            parts.append(f"user metric {self.user_value}")
        return ", ".join(parts)


def run(model_file: str | Path, feeds: list[dict], options=None, providers: list[str] | None = None) -> list[list]:
    """Outputs of ``model_file`` on every sample; ``options`` an onnxruntime.SessionOptions (default: no
    graph optimisation, the reference)."""
    import onnxruntime as ort

    if options is None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
    sess = ort.InferenceSession(str(model_file), options, providers=providers or ["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return [sess.run(None, {k: v for k, v in f.items() if k in names}) for f in feeds]


def compare(reference: list[list], outputs: list[list], max_error: float = DEFAULT_MAX_ERROR) -> Fidelity:
    rel, cos, agree, rows = 0.0, 1.0, 0, 0
    for ref_sample, out_sample in zip(reference, outputs):
        for r, o in zip(ref_sample, out_sample):
            r, o = np.asarray(r, np.float64).ravel(), np.asarray(o, np.float64).ravel()
            if np.all(np.isfinite(r)) and not np.all(np.isfinite(o)):  # NaN/inf where fp32 had numbers
                return Fidelity(False, float("inf"), -1.0)
            norm_r, norm_o = np.linalg.norm(r), np.linalg.norm(o)
            rel = max(rel, float(np.linalg.norm(o - r) / max(norm_r, 1e-12)))
            if norm_r > 0 and norm_o > 0:
                cos = min(cos, float(r @ o / (norm_r * norm_o)))
        for r, o in zip(ref_sample, out_sample):
            r = np.asarray(r)
            if r.ndim == 2 and r.shape[1] >= 2 and np.issubdtype(r.dtype, np.floating):  # class scores
                agree += int(np.sum(np.argmax(r, 1) == np.argmax(np.asarray(o), 1)))
                rows += r.shape[0]
    top1 = agree / rows if rows else None
    passed = rel <= max_error and (top1 is None or top1 >= 1 - max_error)
    return Fidelity(passed, rel, cos, top1)


def check(model_file: str | Path, feeds: list[dict], reference: list[list], options=None,
          providers: list[str] | None = None, max_error: float = DEFAULT_MAX_ERROR,
          user_check: Callable | None = None) -> Fidelity:
    """Run the candidate on ``feeds`` and hold its outputs to ``reference`` (a failure to run is data)."""
    try:
        outputs = run(model_file, feeds, options, providers)
    except Exception as e:
        return Fidelity(False, error=f"{type(e).__name__}: {str(e)[:300]}")
    result = compare(reference, outputs, max_error)
    if user_check is not None:
        try:
            value = user_check(feeds, reference, outputs)
        except Exception as e:
            raise InputError(f"the accuracy check raised {type(e).__name__}: {e}",
                             hint="it is called as fn(inputs, reference, outputs) with one list entry per sample") from e
        if isinstance(value, (bool, np.bool_)):
            result.passed, result.user_value = bool(value), bool(value)
        else:
            result.user_value = float(value)
            result.passed = float(value) <= max_error
    return result
