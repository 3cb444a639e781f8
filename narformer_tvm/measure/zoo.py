"""The model zoo: sampled variants of the NNLQP families (plus ViT and ConvNeXt), reproducible
from (family, seed, index).

Each family declares its raw design variables with their allowed values (``choices``) and a
``make`` that turns a raw sample into ``families.build`` keyword arguments. The published networks
of each family are raw samples too (``standard``), and the tests check they lie in the space.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from narformer_tvm.measure import convnets as C
from narformer_tvm.measure import families as F
from narformer_tvm.measure.corpus import CORPUS
from narformer_tvm.measure.design_space import BATCHES, RES_IMAGENET, Family


def _scaled(base, mults):
    return tuple(max(8, int(round(base * m / 8)) * 8) for m in mults)


def _resnet(r):
    return {"depths": (r["d1"], r["d2"], r["d3"], r["d4"]), "widths": _scaled(r["width"], (1, 2, 4, 8)),
            "bottleneck": r["block"] == "bottleneck", "kernel": r["kernel"], "se": r["se"], "stem": r["width"]}


def _pool(size: int, target: int) -> int:
    """Largest adaptive-pool size <= target that divides the feature map (ONNX export needs it)."""
    return max(d for d in range(1, target + 1) if size % d == 0) if size >= 1 else 1


def _vgg(r):
    return {"pool": _pool(r["resolution"] // 32, 7),"depths": (r["d1"], r["d2"], r["d3"], r["d4"], r["d5"]),
            "widths": _scaled(64 * r["width"], (1, 2, 4, 8, 8)), "bn": r["bn"], "fc": r["fc"]}


def _alexnet(r):
    size = (r["resolution"] + 4 - 11) // 4 + 1
    for _ in range(3):
        size = (size - 3) // 2 + 1
    # Variants sampled before mid_width carry a "mid" that was never used: they rebuild as measured.
    m = r.get("mid_width", 1.0)
    return {"pool": _pool(size, 6), "widths": _scaled(r["width"], (1, 3 * m, 6 * m, 4 * m, 4 * m)), "fc": r["fc"]}


def _squeezenet(r):
    return {"version": r["version"], "base": r["base"], "incr": r["base"], "sr": r["sr"], "n_fire": r["n_fire"]}


def _mobile(stages_table, expand_key="expand", kernel_key="kernel", se_key=None):
    def make(r):
        stages = []
        for i, (t, c, n, s, k, se, act) in enumerate(stages_table):
            t = t if t == 1 or i == 0 else r[f"{expand_key}{i}"]
            k = r[f"{kernel_key}{i}"]
            se = r[f"{se_key}{i}"] if se_key else se
            stages.append((t, c, r[f"n{i}"], s, k, se, act))
        return {"stages": stages, "width": r["width"]}
    return make


def _mobile_choices(stages_table, n_choices, expand=(3, 4, 6), kernels=(3, 5, 7), se=None):
    ch: dict[str, tuple] = {"width": (0.35, 0.5, 0.75, 1.0, 1.25, 1.4)}
    for i, (t, c, n, s, k, se_default, act) in enumerate(stages_table):
        ch[f"n{i}"] = tuple(sorted({n, *n_choices}))
        ch[f"kernel{i}"] = tuple(sorted({k, *kernels}))
        if i > 0:
            ch[f"expand{i}"] = tuple(sorted({t, *expand}))
        if se is not None:
            ch[f"se{i}"] = tuple(sorted({se_default, *se}))
    return ch


def _mobile_standard(stages_table, se=False, **extra):
    raw = dict(extra)
    raw.setdefault("width", 1.0)
    for i, (t, c, n, s, k, se_v, act) in enumerate(stages_table):
        raw[f"n{i}"], raw[f"kernel{i}"] = n, k
        if i > 0:
            raw[f"expand{i}"] = t
        if se:
            raw[f"se{i}"] = se_v
    return raw


def _with_res(choices: dict, res=RES_IMAGENET) -> dict:
    return {**choices, "resolution": res, "batch": BATCHES}


def _std(raw: dict, res=224) -> dict:
    return {**raw, "resolution": res, "batch": 1}


def _googlenet(r):
    rows, n = [], 0
    for row in C.GOOGLENET_CFG:  # the first r["blocks"] inception modules, with the pools between them
        if n == r["blocks"]:
            break
        rows.append(row)
        n += row != "M"
    return {"width": r["width"], "cfg": rows}


def _effnet(r):
    stages = [(t, c, n, s, k, r["se"], act) for t, c, n, s, k, se, act in C.EFFNET_STAGES]
    return {"stages": stages, "width": r["width"], "depth": r["depth"]}


def _mbv3(r):
    table = F.MBV3_LARGE if r["size"] == "large" else F.MBV3_SMALL
    stages = [(t if i == 0 else r["expand"] * t, c, max(1, n + r["extra"] if n > 1 else n), s,
               r["kernel"] if k == 5 else k, se if r["se"] else 0, act)
              for i, (t, c, n, s, k, se, act) in enumerate(table)]
    last, hidden = (960, 1280) if r["size"] == "large" else (576, 1024)
    return {"stages": stages, "width": r["width"], "last": last, "last_hidden": hidden}


def _nb201(r):
    return {"arch": r["arch"], "c": r["c"], "n_cells": r["n_cells"]}


def _vit(r):
    return {"patch": r["patch"], "dim": r["dim"], "depth": r["depth"], "heads": r["dim"] // 64,
            "mlp_ratio": r["mlp_ratio"], "image": r["resolution"]}


def _convnext(r):
    return {"depths": (r["d1"], r["d2"], r["d3"], r["d4"]), "widths": _scaled(r["width"], (1, 2, 4, 8)),
            "kernel": r["kernel"], "ratio": r["ratio"]}


from narformer_tvm.measure.convnets import NB201_OPS as _NB201_OPS

NB201_ARCHS = tuple(
    f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|"
    for a in _NB201_OPS for b in _NB201_OPS for c in _NB201_OPS for d in _NB201_OPS for e in _NB201_OPS
    for f in _NB201_OPS)


ZOO: dict[str, Family] = {f.name: f for f in [
    Family("alexnet", "alexnet", _with_res({"width": (32, 48, 64, 80, 96), "mid_width": (0.5, 0.75, 1.0, 1.25),
                                            "fc": (1024, 2048, 4096)}, (128, 160, 192, 224)),
           _alexnet, {"alexnet": _std({"width": 64, "mid_width": 1.0, "fc": 4096})}),
    Family("vgg", "vgg", _with_res({**{f"d{i}": (1, 2, 3, 4) for i in range(1, 6)},
                                    "width": (0.25, 0.5, 0.75, 1.0), "bn": (False, True), "fc": (1024, 2048, 4096)},
                                   (64, 96, 128, 160, 224)),
           _vgg, {"vgg11": _std({"d1": 1, "d2": 1, "d3": 2, "d4": 2, "d5": 2, "width": 1.0, "bn": False, "fc": 4096}),
                  "vgg16": _std({"d1": 2, "d2": 2, "d3": 3, "d4": 3, "d5": 3, "width": 1.0, "bn": False, "fc": 4096})}),
    Family("resnet", "resnet", _with_res({"block": ("basic", "bottleneck"), "d1": (1, 2, 3, 4), "d2": (1, 2, 3, 4, 6),
                                          "d3": (1, 2, 3, 4, 6, 8), "d4": (1, 2, 3, 4), "width": (32, 48, 64, 80, 96),
                                          "kernel": (3, 5), "se": (0.0, 0.25)}),
           _resnet, {"resnet18": _std({"block": "basic", "d1": 2, "d2": 2, "d3": 2, "d4": 2, "width": 64, "kernel": 3, "se": 0.0}),
                     "resnet34": _std({"block": "basic", "d1": 3, "d2": 4, "d3": 6, "d4": 3, "width": 64, "kernel": 3, "se": 0.0}),
                     "resnet50": _std({"block": "bottleneck", "d1": 3, "d2": 4, "d3": 6, "d4": 3, "width": 64, "kernel": 3, "se": 0.0})}),
    Family("squeezenet", "squeezenet", _with_res({"version": ("1.0", "1.1"), "base": (64, 96, 128, 160, 192),
                                                  "sr": (0.125, 0.25, 0.5), "n_fire": (4, 6, 8)}),
           _squeezenet, {"squeezenet1_0": _std({"version": "1.0", "base": 128, "sr": 0.125, "n_fire": 8}),
                         "squeezenet1_1": _std({"version": "1.1", "base": 128, "sr": 0.125, "n_fire": 8})}),
    Family("mobilenetv2", "mobilenetv2", _with_res(_mobile_choices(F.MBV2_STAGES, (1, 2, 3, 4))),
           _mobile(F.MBV2_STAGES), {"mobilenet_v2": _std(_mobile_standard(F.MBV2_STAGES))}),
    Family("mnasnet", "mnasnet", _with_res(_mobile_choices(C.MNAS_STAGES, (1, 2, 3, 4))),
           _mobile(C.MNAS_STAGES), {"mnasnet1_0": _std(_mobile_standard(C.MNAS_STAGES))}),
    Family("mobilenetv3", "mobilenetv3", _with_res({"size": ("small", "large"), "width": (0.5, 0.75, 1.0, 1.25),
                                                    "expand": (0.75, 1.0, 1.25), "extra": (-1, 0, 1),
                                                    "kernel": (3, 5, 7), "se": (False, True)}),
           _mbv3, {"mobilenet_v3_large": _std({"size": "large", "width": 1.0, "expand": 1.0, "extra": 0, "kernel": 5, "se": True}),
                   "mobilenet_v3_small": _std({"size": "small", "width": 1.0, "expand": 1.0, "extra": 0, "kernel": 5, "se": True})}),
    Family("efficientnet", "efficientnet", _with_res({"width": (0.5, 0.75, 1.0, 1.1, 1.2), "depth": (0.5, 0.75, 1.0, 1.1, 1.2),
                                                      "se": (0.125, 0.25)}, (128, 160, 192, 224, 240, 256)),
           _effnet, {"efficientnet_b0": _std({"width": 1.0, "depth": 1.0, "se": 0.25}),
                     "efficientnet_b1": _std({"width": 1.0, "depth": 1.1, "se": 0.25}, 240)}),
    Family("googlenet", "googlenet", _with_res({"width": (0.25, 0.5, 0.75, 1.0, 1.25, 1.5), "blocks": (3, 5, 7, 9)},
                                               (96, 128, 160, 192, 224, 256)),
           _googlenet, {"googlenet": _std({"width": 1.0, "blocks": 9})}),
    Family("nb201", "nb201", {"arch": NB201_ARCHS, "c": (8, 16, 24, 32), "n_cells": (1, 2, 3, 5),
                              "resolution": (32, 64), "batch": BATCHES},
           _nb201, {"nb201_example": _std({"arch": F.STANDARD["nb201_example"][1]["arch"], "c": 16, "n_cells": 5}, 32)}),
    # patch 8 at 224 px (785 tokens) took minutes per run on 2 cores: tokens are capped at 196
    Family("vit", "vit", {"patch": (16, 32), "dim": (192, 256, 384, 512, 768), "depth": (2, 4, 6, 8, 12),
                          "mlp_ratio": (2.0, 3.0, 4.0), "resolution": (96, 128, 160, 224), "batch": BATCHES},
           _vit, {"vit_b_16": _std({"patch": 16, "dim": 768, "depth": 12, "mlp_ratio": 4.0})}, nnlqp=False),
    Family("convnext", "convnext", _with_res({"d1": (1, 2, 3), "d2": (1, 2, 3), "d3": (1, 3, 6, 9), "d4": (1, 2, 3),
                                              "width": (32, 48, 64, 96), "kernel": (3, 5, 7), "ratio": (2, 3, 4)}),
           _convnext, {"convnext_tiny": _std({"d1": 3, "d2": 3, "d3": 9, "d4": 3, "width": 96, "kernel": 7, "ratio": 4})},
           nnlqp=False),
]}
FAMILIES: dict[str, Family] = {**ZOO, **CORPUS}  # every family a variant can name


@dataclass(frozen=True)
class Variant:
    family: str
    seed: int
    index: int
    raw: dict  # the sampled design variables (resolution and batch included)

    @property
    def name(self) -> str:
        return f"{self.family}-s{self.seed}-{self.index:05d}"

    @property
    def key(self) -> str:
        """Identity of the network: equal raw samples are the same network."""
        blob = json.dumps({"family": self.family, **self.raw}, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    def kwargs(self) -> dict:
        return FAMILIES[self.family].make(self.raw)

    @property
    def arch_key(self) -> str:
        """Identity of the network as built: raw samples that build the same network share it."""
        blob = json.dumps({"family": self.family, "kwargs": self.kwargs(), "resolution": self.raw.get("resolution"),
                           "batch": self.raw.get("batch")}, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    @property
    def _hf_type(self) -> str | None:
        builder = FAMILIES[self.family].builder
        return builder[3:] if builder.startswith("hf:") else None

    def build(self):
        if self._hf_type:
            from narformer_tvm.measure import hf_models

            return hf_models.build(self._hf_type, self.kwargs())
        return F.build(FAMILIES[self.family].builder, **self.kwargs())

    def export(self, path: str | Path, opset: int = 17) -> Path:
        if self._hf_type:
            from narformer_tvm.measure import hf_models

            size = self.raw.get("seq") or self.raw["resolution"]
            return hf_models.export(self._hf_type, self.kwargs(), path, self.raw["batch"], size, opset)
        F.export_onnx(self.build(), path, self.raw["resolution"], self.raw["batch"], opset=opset)
        return Path(path)

    def to_dict(self) -> dict:
        return {"family": self.family, "seed": self.seed, "index": self.index, "raw": self.raw}


GROUPS = {"all": lambda: list(ZOO), "nnlqp": lambda: [f for f in ZOO if ZOO[f].nnlqp], "corpus": lambda: list(CORPUS)}


def family_names(spec: str = "all") -> list[str]:
    """A comma-separated list of family names and groups: 'all' (the twelve hand-written families),
    'nnlqp' (NNLQP's ten), 'corpus' (real architectures from transformers)."""
    names = []
    for item in (s.strip() for s in spec.split(",")):
        if item:
            names += GROUPS[item]() if item in GROUPS else [item]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        from narformer_tvm.errors import InputError
        raise InputError(f"unknown family {', '.join(unknown)}",
                         hint=f"choose from: {', '.join(GROUPS)}, {', '.join(FAMILIES)}")
    return list(dict.fromkeys(names))


def variant(family: str, seed: int, index: int) -> Variant:
    """The index-th distinct variant of a family for a seed (earlier duplicates are skipped)."""
    for v in variants(family, seed, index + 1):
        pass
    return v


def variants(family: str, seed: int, count: int) -> Iterator[Variant]:
    """The first ``count`` distinct variants of a family: reproducible, and no two build the same network."""
    fam = FAMILIES[family]
    fam_tag = int(hashlib.sha1(family.encode()).hexdigest()[:8], 16)
    seen: set[str] = set()
    draw, made = 0, 0
    while made < count:
        rng = np.random.default_rng([seed, fam_tag, draw])
        draw += 1
        v = Variant(family, seed, made, fam.sample(rng))
        if v.arch_key in seen:
            if draw > 50 * count + 1000:
                raise ValueError(f"family {family} has fewer than {count} distinct variants")
            continue
        seen.add(v.arch_key)
        made += 1
        yield v


def standard_variants(families: dict[str, Family] = ZOO) -> list[Variant]:
    """The published networks of the hand-written families (or of ``families``), as zoo variants."""
    return [Variant(f.name, -1, i, raw) for f in families.values() for i, raw in enumerate(f.standard.values())]


def standard_names(families: dict[str, Family] = FAMILIES) -> dict[str, Variant]:
    """Published network name -> its variant, for every family."""
    out = {}
    for f in families.values():
        for i, (name, raw) in enumerate(f.standard.items()):
            out[name] = Variant(f.name, -1, i, raw)
    return out
