"""The configuration-aware predictor behind ``tune-ort``: its data, features and training."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

from narformer_tvm.errors import InputError
from narformer_tvm.integrations.ort_tuning import N_CONFIG, candidate_of, with_config


def load_config_samples(db: str | Path, target: str = "llvm", include_noisy: bool = False, cores: int | None = None):
    """Every successful ONNX Runtime row of ``target`` with its configuration in the static features."""
    from narformer_tvm.data.store import Store
    from narformer_tvm.graph.tokens import GraphTable
    from narformer_tvm.learn.samples import Sample

    samples = []
    with Store(db, readonly=True) as store:
        configs = {c["id"]: c for c in store.configs() if c["config"].get("runtime") == "onnxruntime"
                   and c["config"].get("target") == target}
        if not configs:
            raise InputError(f"{db}: no ONNX Runtime measurements for target {target}",
                             hint="collect them with `narformer-tvm profile --ort-candidates N ...`")
        for cid, cfg in configs.items():
            cores = cores or (cfg.get("fingerprint") or {}).get("physical_cores") or 0
            for r in store.rows(cid):
                if not (r["latency_ms"] and r["latency_ms"] > 0) or (r["noisy"] and not include_noisy):
                    continue
                c = candidate_of(cfg["config"], json.loads(r["source"] or "{}"))
                t = with_config(GraphTable.from_bytes(r["graph"], r["name"]), c, cores or c.threads)
                samples.append(Sample(f"{r['key']}@{cid}", r["name"], r["family"] or "user", t, r["latency_ms"],
                                      r["model_id"], candidate=c))
    if not samples:
        raise InputError(f"{db}: no successful ONNX Runtime measurements for target {target}")
    return samples


def config_predictor(base, ensemble: int = 3, seed: int = 0):
    """A configuration-aware predictor initialised from a trained graph predictor ``base``: the
    graph part is copied, the configuration columns of the static layer start at zero."""
    import torch

    from narformer_tvm.model.narformer import ModelConfig, NARFormer
    from narformer_tvm.model.predictor import Predictor

    cfg = ModelConfig(**{**base.config.to_dict(), "n_static": base.config.n_static + N_CONFIG})
    models = []
    for k in range(ensemble):
        torch.manual_seed(seed + k)
        m = NARFormer(cfg)
        state = dict(base.models[k % len(base.models)].state_dict())
        w = torch.zeros_like(m.static[0].weight)
        w[:, :base.config.n_static] = state["static.0.weight"]
        state["static.0.weight"] = w
        m.load_state_dict(state)
        models.append(m)
    return Predictor(models, base.features, replace(base.target), dict(base.profile),
                     {"task": "ort-configs", "base": base.metadata.get("options")})


def source_key(sample) -> str:
    """The source model of a configuration-aware sample (its variants and session options share it)."""
    return sample.key.split("@")[0].split(":")[0]


def split_by_source(samples, test_frac: float = 0.1) -> tuple[list[int], list[int]]:
    """Per family, every configuration of the last ``test_frac`` source models is the test set: a
    model's int8 or threaded rows never leak into training while its default row is tested."""
    first_id: dict[str, int] = {}
    family: dict[str, str] = {}
    for s in samples:
        k = source_key(s)
        first_id[k] = min(first_id.get(k, s.model_id), s.model_id)
        family.setdefault(k, s.family)
    by_family: dict[str, list[str]] = {}
    for k in sorted(first_id, key=first_id.get):
        by_family.setdefault(family[k], []).append(k)
    test_keys = set()
    for keys in by_family.values():
        if len(keys) > 1:
            test_keys.update(keys[len(keys) - max(1, int(round(test_frac * len(keys)))):])
    test = [i for i, s in enumerate(samples) if source_key(s) in test_keys]
    return [i for i, s in enumerate(samples) if source_key(s) not in test_keys], test


def train_config_predictor(samples, base, train_idx, opts, ensemble: int = 3, cores: int | None = None,
                           checkpoint=None, progress: Callable | None = None):
    """Fine-tune a configuration-aware predictor from ``base`` on ``samples[train_idx]`` (validation
    carved from the training models, never from the test ones)."""
    from narformer_tvm.learn.splits import carve_validation
    from narformer_tvm.learn.train import train_predictor

    groups = sorted({source_key(samples[i]) for i in train_idx})
    _, val_groups = carve_validation(list(range(len(groups))), 0.1, opts.fit.seed)
    val_keys = {groups[i] for i in val_groups}
    tr = [samples[i] for i in train_idx if source_key(samples[i]) not in val_keys]
    val = [samples[i] for i in train_idx if source_key(samples[i]) in val_keys]
    pred = config_predictor(base, ensemble, opts.fit.seed)
    pred.metadata["cores"] = cores or max(s.candidate.threads for s in samples)  # the profiling machine's
    pred = train_predictor(tr, val, opts, checkpoint=checkpoint, progress=progress, init=pred)
    pred.metadata["task"] = "ort-configs"
    return pred
