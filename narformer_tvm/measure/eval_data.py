"""Inputs for static quantisation and output-fidelity checks: the user's data, or random stand-ins.

``--calibration-data`` names a folder of ``.npy`` files (one array per sample, for single-input
models) or ``.npz`` files (one array per input name), or a Python callable ``module:function`` /
``path/to/file.py:function`` returning an iterable of such samples (dicts, or arrays for a
single-input model). Every sample is checked against the model's inputs before any work.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from narformer_tvm.errors import InputError

RANDOM_SAMPLES = 8  # random-input samples when the user gives no data


@dataclass
class EvalData:
    feeds: list[dict]  # one dict input name -> array per sample
    source: str  # where the samples came from ("random" when none were given)

    @property
    def random(self) -> bool:
        return self.source == "random"

    def describe(self) -> str:
        what = "random inputs (outputs on real data are not validated)" if self.random else self.source
        return f"{len(self.feeds)} samples: {what}"


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple  # ints, or None/str for dynamic dimensions


def model_inputs(model_path: str | Path) -> list[InputSpec]:
    import onnxruntime as ort

    from narformer_tvm.measure.ort_session import DTYPES

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return [InputSpec(i.name, np.dtype(DTYPES.get(i.type, np.float32)),
                      tuple(d if isinstance(d, int) and d > 0 else None for d in i.shape)) for i in sess.get_inputs()]


def random_data(model_path: str | Path, input_shapes: dict | None = None, batch_size: int | None = None,
                n: int = RANDOM_SAMPLES) -> EvalData:
    import onnxruntime as ort

    from narformer_tvm.measure.ort_session import random_feeds

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return EvalData([random_feeds(sess, input_shapes, batch_size or 1, seed=i) for i in range(n)], "random")


def check_sample(sample, inputs: list[InputSpec], where: str) -> dict:
    """``sample`` as a feed dict for ``inputs``, or an InputError naming ``where`` and what is wrong."""
    names = ", ".join(i.name for i in inputs)
    if isinstance(sample, np.ndarray):
        if len(inputs) != 1:
            raise InputError(f"{where}: one array, but the model has {len(inputs)} inputs ({names})",
                             hint="give each sample as an .npz file (or a dict) keyed by input name")
        sample = {inputs[0].name: sample}
    if not isinstance(sample, dict):
        raise InputError(f"{where}: a sample must be an array or a dict of arrays, not {type(sample).__name__}")
    missing = [i.name for i in inputs if i.name not in sample]
    if len(inputs) == 1 and missing and len(sample) == 1:  # one array under another key (np.savez's arr_0)
        sample = {inputs[0].name: next(iter(sample.values()))}
        missing = []
    if missing:
        raise InputError(f"{where}: no array for input(s) {', '.join(missing)}; it has {', '.join(sample) or 'none'}",
                         hint=f"key the arrays by the model's input names: {names}")
    feeds = {}
    for spec in inputs:
        a = np.asarray(sample[spec.name])
        if a.dtype != spec.dtype:
            raise InputError(f"{where}: input {spec.name!r} is {a.dtype}, the model takes {spec.dtype}",
                             hint=f"save it with array.astype(np.{spec.dtype.name})")
        if a.ndim != len(spec.shape) or any(d is not None and d != n for d, n in zip(spec.shape, a.shape)):
            want = "x".join("?" if d is None else str(d) for d in spec.shape)
            raise InputError(f"{where}: input {spec.name!r} has shape {'x'.join(map(str, a.shape))}, "
                             f"the model takes {want} (? = any size)")
        feeds[spec.name] = a
    return feeds


def load_callable(spec: str) -> Callable:
    """The function named by ``module:function`` or ``path/to/file.py:function``."""
    target, _, func = spec.rpartition(":")
    if not target or not func:
        raise InputError(f"{spec!r} is neither a folder nor module:function",
                         hint="pass a folder of .npy/.npz files, or e.g. mypkg.data:samples")
    try:
        if target.endswith(".py"):
            if not Path(target).is_file():
                raise InputError(f"{target}: no such file")
            mod_spec = importlib.util.spec_from_file_location(Path(target).stem, target)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{spec}: cannot import {target} ({type(e).__name__}: {e})") from e
    fn = getattr(module, func, None)
    if not callable(fn):
        raise InputError(f"{spec}: {target} has no callable {func!r}")
    return fn


def load_eval_data(spec: str, model_path: str | Path) -> EvalData:
    """The samples named by ``spec`` (folder or callable), each checked against the model's inputs."""
    inputs = model_inputs(model_path)
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz"))
        if not files:
            raise InputError(f"{path}: no .npy or .npz files", hint="save one sample per file with np.save/np.savez")
        feeds = []
        for f in files:
            try:
                raw = np.load(f, allow_pickle=False)
                sample = dict(raw) if f.suffix == ".npz" else raw
            except Exception as e:
                raise InputError(f"{f}: not a readable numpy file ({type(e).__name__}: {e})") from e
            feeds.append(check_sample(sample, inputs, str(f)))
        return EvalData(feeds, str(path))
    if path.suffix in (".npy", ".npz") or (path.exists() and not path.is_dir()):
        raise InputError(f"{spec}: give the folder that holds the sample files, not one file")
    fn = load_callable(spec)
    try:
        samples = list(fn())
    except Exception as e:
        raise InputError(f"{spec}: calling it failed ({type(e).__name__}: {e})") from e
    if not samples:
        raise InputError(f"{spec}: returned no samples")
    return EvalData([check_sample(s, inputs, f"{spec} sample {k}") for k, s in enumerate(samples)], spec)
