"""Training samples read from a dataset, labelled as a predictor's profile says."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from narformer_tvm.data.labels import (
    LabelSpec,
)
from narformer_tvm.data.store import Store
from narformer_tvm.errors import InputError
from narformer_tvm.graph.tokens import (
    GraphTable,
)


@dataclass
class Sample:
    key: str
    name: str
    family: str
    table: GraphTable
    latency_ms: float
    model_id: int = 0
    split: str | None = None  # fixed split tag from an import, if any
    candidate: object = None  # tune_ort.Candidate it was measured under (configuration-aware samples)


def load_samples(db: str | Path, runtime: str | None = None, target: str | None = None,
                 config_id: int | None = None, include_noisy: bool = False,
                 regime_correct: bool | str = True, mean_passes: bool = False,
                 merge_duplicates: bool = True, pass_: str = "main") -> tuple[list[Sample], dict]:
    """Successful measurements of one configuration (the only one, or the one selected) in its main pass,
    or in the pass ``pass_`` (e.g. a repeat measured after a fix).

    Rows flagged noisy are left out unless asked for: they disagree with a quiet re-measurement many
    times more than unflagged rows do (docs/profiling.md).
    Gated rows' labels are divided by their dataset.regime_factor unless ``regime_correct`` is off, or
    by their dataset.sitting_factor where it is "sitting";
    with ``mean_passes`` a model is labelled by the geometric mean of its main row and its clean rows of
    every repeat pass (dataset.repeat_pass_name). The returned configuration's ``labels`` says which
    labels the samples carry."""
    with Store(db, readonly=True) as store:
        configs = store.configs()
        chosen = [c for c in configs if (config_id is None or c["id"] == config_id)
                  and (runtime is None or c["config"].get("runtime") == runtime)
                  and (target is None or c["config"].get("target") == target)]
        if not chosen:
            raise InputError(f"{db}: no measurements for runtime={runtime or 'any'} target={target or 'any'}",
                             hint="see `narformer-tvm dataset info` for what the dataset holds")
        if len(chosen) > 1:
            names = "; ".join(f"{c['id']}: {json.dumps(c['config'])}" for c in chosen)
            raise InputError(f"{db}: several configurations match ({names})",
                             hint="narrow it down with --runtime/--target (or --config-id)")
        cfg = chosen[0]
        rows = store.rows(cfg["id"], pass_)
        repeats: dict[str, list[dict]] = {}  # key -> clean rows of the repeat passes
        for other in [p for p in store.pass_names(cfg["id"]) if p != pass_] if mean_passes else []:
            for r in store.rows(cfg["id"], other):
                if not r["noisy"] and r["latency_ms"] > 0:
                    repeats.setdefault(r["key"], []).append(r)
    rows = [r for r in rows if r["latency_ms"] and r["latency_ms"] > 0 and (include_noisy or not r["noisy"])]
    if not rows:
        raise InputError(f"{db}: the configuration has no successful measurements"
                         + ("" if pass_ == "main" else f" in pass {pass_!r}"))

    factor = "sitting_factor" if regime_correct == "sitting" else "regime_factor" if regime_correct else None

    def label(r: dict) -> float:
        return r["latency_ms"] / (r[factor] if factor else 1.0)

    def mean_label(r: dict) -> float:
        passes = [r, *repeats.get(r["key"], ())]
        return label(r) if len(passes) == 1 else math.exp(sum(math.log(label(x)) for x in passes) / len(passes))

    labels = [mean_label(r) for r in rows]
    samples = [Sample(r["key"], r["name"], r["family"] or "user", GraphTable.from_bytes(r["graph"], r["name"]),
                      y, r["model_id"], r["split"]) for r, y in zip(rows, labels)]
    merged = 0
    if merge_duplicates:
        samples, merged = merge_graph_duplicates(samples)
    corrected = factor and any(r[factor] != 1.0 for r in rows)
    correction = ("sitting" if factor == "sitting_factor" else "regime") if corrected else "none"
    kind = LabelSpec(correction, mean_passes).name
    return samples, {**cfg, "labels": kind, "graph_duplicates": merged}


def merge_graph_duplicates(samples: list[Sample]) -> tuple[list[Sample], int]:
    """One sample per encoded graph: the first measured, labelled by the geometric mean of all of them."""
    digests = [s.table.digest() for s in samples]
    groups: dict[str, list[Sample]] = {}
    for s, d in zip(samples, digests):
        groups.setdefault(d, []).append(s)
    out = []
    for s, d in zip(samples, digests):
        group = groups[d]
        if group[0] is not s:
            continue
        if len(group) > 1:
            s = replace(s, latency_ms=math.exp(sum(math.log(x.latency_ms) for x in group) / len(group)))
        out.append(s)
    return out, len(samples) - len(out)


def dataset_path(ds: str | Path) -> Path | None:
    """A dataset named as given, or relative to the source checkout (how shipped profiles name theirs)."""
    for path in (Path(ds), Path(__file__).resolve().parents[2] / ds):
        if path.exists():
            return path.resolve()
    return None


def same_dataset(a: str | Path | None, b: str | Path | None) -> bool:
    return bool(a and b) and dataset_path(a) is not None and dataset_path(a) == dataset_path(b)


def training_graphs(profile: dict) -> set[str] | None:
    """Encoded-graph digests of every model in the dataset a predictor was trained on (its profile's
    ``dataset``, as a path or relative to the source checkout); None where that dataset is not here."""
    path = dataset_path(profile["dataset"]) if profile.get("dataset") else None
    if path is None:
        return None
    try:
        samples, _ = load_samples(path, merge_duplicates=False, include_noisy=True, regime_correct=False)
    except InputError:
        return None
    return {s.table.digest() for s in samples}


def unseen_in_training(samples: list[Sample], profile: dict) -> tuple[list[Sample], int | None]:
    """The samples whose graphs the predictor never trained on, and how many were left out (None: its
    training dataset is not here to compare with, and nothing was left out)."""
    seen = training_graphs(profile)
    if seen is None:
        return samples, None
    kept = [s for s in samples if s.table.digest() not in seen]
    return kept, len(samples) - len(kept)
