"""What a label is: the statistic over timing blocks, regime and sitting corrections, passes, noise floors."""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from narformer_tvm.data.store import Store


def _block_medians(blocks: list[list[float]]) -> list[float]:
    return [statistics.median(b) for b in blocks if b]


def label_statistic(blocks: list[list[float]]) -> float:
    """The dataset label: minimum over blocks of the block median.

    Chosen by measured repeatability on this kind of machine (docs/profiling.md): ONNX Runtime
    latency flips between regimes lasting tens of runs; the best block's median is the
    regime-free cost, repeating within a few percent where an overall median varied up to 23%.
    """
    return min(_block_medians(blocks))


LABEL_STATISTIC = "min_block_median"  # the statistic stored as latency_ms


STATISTICS: dict[str, Callable[[list[list[float]]], float]] = {
    LABEL_STATISTIC: label_statistic,
    "median": lambda b: statistics.median([x for blk in b for x in blk]),
    "mean": lambda b: statistics.fmean([x for blk in b for x in blk]),
    "min": lambda b: min(x for blk in b for x in blk),
    "median_block_median": lambda b: statistics.median(_block_medians(b)),
}


def block_spread(blocks: list[list[float]]) -> float:
    """Relative spread of block medians: max/min - 1 (0.1 = blocks differ by 10%)."""
    meds = _block_medians(blocks)
    return max(meds) / min(meds) - 1.0 if meds and min(meds) > 0 else math.inf


# Labels move with the probe's slowdown to this power, not in full: the probe, a network of small
# operators, is slowed more than most networks (the choice and its check: docs/profiling.md).
REGIME_EXPONENT = 0.5


CORRECTED_LABELS = "regime-corrected"  # LabelSpec names: labels divided by regime_factor
SITTING_CORRECTED_LABELS = "sitting-corrected"  # ... divided by sitting_factor instead
MEAN_OVER_PASSES = ", mean over passes"  # ... then the geometric mean over a model's clean passes


@dataclass(frozen=True)
class LabelSpec:
    """What a label is, as datasets, predictors and reports name it: the statistic over timing blocks,
    the correction for the machine's regime, and whether a model's passes are averaged (k passes on
    different sittings divide a sitting's offset and the measurement noise by about sqrt(k))."""

    correction: str = "none"  # "none" | "regime" (regime_factor) | "sitting" (sitting_factor)
    mean_passes: bool = False
    statistic: str = "min_block_median"  # LABEL_STATISTIC

    @property
    def name(self) -> str:
        base = {"none": "raw", "regime": CORRECTED_LABELS, "sitting": SITTING_CORRECTED_LABELS}[self.correction]
        return base + (MEAN_OVER_PASSES if self.mean_passes else "")

    @classmethod
    def parse(cls, name: str) -> "LabelSpec":
        """From a name as ``name`` writes it (profiles' and load_samples' ``labels``); unknown = raw."""
        correction = ("sitting" if name.startswith(SITTING_CORRECTED_LABELS) else
                      "regime" if name.startswith(CORRECTED_LABELS) else "none")
        return cls(correction, name.endswith(MEAN_OVER_PASSES))

    def load_options(self) -> dict:
        """load_samples' keyword arguments for these labels."""
        return {"regime_correct": {"none": False, "regime": True, "sitting": "sitting"}[self.correction],
                "mean_passes": self.mean_passes}


def repeat_pass_name(round_: int) -> str:
    """The pass a repeat round writes: round 1 is the noise-floor pass ('repeat'), later rounds measure the
    same models again on other sittings ('repeat2', ...), so that mean-over-passes labels average sittings."""
    if round_ < 1:
        raise ValueError(f"repeat rounds count from 1, not {round_}")
    return "repeat" if round_ == 1 else f"repeat{round_}"


def is_pass_name(name: str) -> bool:
    return name in ("main", "repeat") or (name.startswith("repeat") and name[6:].isdigit() and int(name[6:]) >= 2)


def regime_factor(info: dict | None, reference_ms: float | None, exponent: float = REGIME_EXPONENT) -> float:
    """How much slower (> 1) or quicker than its configuration's typical fast regime a gated measurement
    ran, judged by its probes (1 without probes).

    The regime gate (profile.RegimeGate) probes a reference network just before and after each model
    and accepts the row while both probes stay within REGIME_MARGIN of the fastest probe of that sweep,
    so a label still carries up to 15% of drift, plus whatever the fast level itself moved between
    sittings. The factor is the quicker probe over ``reference_ms`` (Store.probe_reference), to the
    REGIME_EXPONENT: dividing labels by it brings two measurements of the same models closer
    (docs/profiling.md)."""
    probes = (info or {}).get("probe_ms")
    if not probes or not reference_ms:
        return 1.0
    return (min(probes) / reference_ms) ** exponent


def sitting_factor(info: dict | None, reference_ms: float | None, sitting_ms: float | None,
                   exponent: float = REGIME_EXPONENT) -> float:
    """regime_factor with the sitting's whole level taken out in full: (the sitting's median quicker probe
    over ``reference_ms``) times (the row's quicker probe over the sitting's) to REGIME_EXPONENT (1 without
    probes). A sitting whose probes all ran a few percent off the usual level ran every network about as
    far off, while the flips within a sitting slow small operators more than most networks: pairs of
    measurements from sittings at different levels agree best so (docs/profiling.md)."""
    probes = (info or {}).get("probe_ms")
    if not probes or not reference_ms or not sitting_ms:
        return 1.0
    return (sitting_ms / reference_ms) * (min(probes) / sitting_ms) ** exponent


SITTING_GAP_S = 20 * 60  # a pause this long between two measurements starts a new sitting


def sittings(store: Store, pass_: str = "main", gap_s: float = SITTING_GAP_S,
             references: dict[int, float | None] | None = None) -> list[dict]:
    """Runs of measurements without a pause of ``gap_s``, per configuration: when, how many rows, and how
    quick the regime probes ran against the configuration's typical level (Store.probe_reference). A
    sitting far off that level is one to re-measure (`profile --measured-between START END --repeat-pass 1`).
    ``references``: the configurations to cover and their typical probes, where the caller has them."""
    from datetime import datetime

    q = ("SELECT measured_at, noisy, latency_ms, info FROM measurements WHERE config_id=? AND pass=?"
         " ORDER BY measured_at")
    out = []
    for cfg in store.configs():
        if references is not None and cfg["id"] not in references:
            continue
        found: list[dict] = []
        last = None
        for at, noisy, lat, info in store.db.execute(q, (cfg["id"], pass_)):
            t = datetime.fromisoformat(at)
            if not found or (t - last).total_seconds() > gap_s:
                found.append({"config_id": cfg["id"], "pass": pass_, "start": at, "rows": 0, "noisy": 0, "failed": 0,
                              "probes": []})
            last = t
            current = found[-1]
            current.update(end=at, rows=current["rows"] + 1, noisy=current["noisy"] + noisy,
                           failed=current["failed"] + (lat is None))
            probes = json.loads(info).get("probe_ms") if info else None
            if probes and not noisy:
                current["probes"].append(min(probes))
        reference = references[cfg["id"]] if references is not None else store.probe_reference(cfg["id"])
        for sit in found:
            probes = sit.pop("probes")
            sit["probe_ms"] = float(np.median(probes)) if probes else None
            sit["probe_vs_typical"] = sit["probe_ms"] / reference - 1 if probes and reference else None
        out += found
    return out


def labels_corrected(profile: dict) -> bool | str:
    """Whether a predictor's profile (or a load_samples configuration) has regime-corrected labels
    (dataset.regime_factor: True; dataset.sitting_factor: "sitting"), as load_samples' ``regime_correct``
    takes it: a predictor's metrics are on the labels it learned."""

    return LabelSpec.parse(profile.get("labels", "")).load_options()["regime_correct"]


def label_options(profile: dict) -> dict:
    """load_samples' keyword arguments for the labels a predictor learned (its profile's ``labels``)."""

    return LabelSpec.parse(profile.get("labels", "")).load_options()


REGIME_CORRECTED = f"{LABEL_STATISTIC}, regime-corrected"  # noise_floor's entry for the labels training uses


SITTING_CORRECTED = f"{LABEL_STATISTIC}, sitting-corrected"  # ... for labels divided by dataset.sitting_factor


def noise_floor(store: Store, config_id: int | None = None, second: str = "repeat") -> dict[str, dict]:
    """MAPE between the main and the repeat pass (or the ``second`` pass, e.g. a later round on another
    sitting) of the same models (rows flagged noisy left out), for each candidate statistic, and for the
    label divided by its regime factor (REGIME_CORRECTED) or its sitting factor (SITTING_CORRECTED), where
    the rows were gated."""
    return noise_floors(store, config_id, [second])[second]


def paired_rows(first: list[dict], second: list[dict], include_noisy: bool = False) -> list[tuple[dict, dict]]:
    """(first pass's row, second pass's row) of every model and configuration measured in both, neither
    row flagged noisy unless asked for (training leaves those rows out)."""
    def key(r):
        return r["key"], r["config_id"]

    earlier = {key(r): r for r in first if include_noisy or not r["noisy"]}
    return [(earlier[key(r)], r) for r in second if key(r) in earlier and (include_noisy or not r["noisy"])]


def noise_floors(store: Store, config_id: int | None = None, passes: list[str] | None = None,
                 include_noisy: bool = False) -> dict[str, dict]:
    """noise_floor of the main pass against each of ``passes`` (default: every repeat pass measured, the
    noise-floor pass 'repeat' and the later rounds), reading the main pass once. Pairs with a row flagged
    noisy are left out unless asked for, as training leaves those rows out (train.load_samples): the floor
    is that of the labels a predictor is scored on."""
    from narformer_tvm.data.blocks import unpack_blocks

    main = store.rows(config_id, "main")
    out = {}
    for second in passes if passes is not None else [p for p in store.pass_names(config_id) if p != "main"]:
        pairs = paired_rows(main, store.rows(config_id, second), include_noisy)
        stats = dict(STATISTICS)
        factors = {}  # corrected entry -> the row's factor it divides by
        if any(a["regime_factor"] != 1.0 or b["regime_factor"] != 1.0 for a, b in pairs):
            stats[REGIME_CORRECTED] = stats[SITTING_CORRECTED] = label_statistic
            factors = {REGIME_CORRECTED: "regime_factor", SITTING_CORRECTED: "sitting_factor"}
        floor = out[second] = {}
        for name, stat in stats.items():
            errs = []
            for a, b in pairs:
                x, y = stat(unpack_blocks(a["samples"])), stat(unpack_blocks(b["samples"]))
                if name in factors:
                    x, y = x / a[factors[name]], y / b[factors[name]]
                errs.append(abs(x - y) / y)
            if errs:
                errs.sort()
                floor[name] = {"pairs": len(errs), "mape": sum(errs) / len(errs),
                               "p90": errs[int(0.9 * (len(errs) - 1))], "max": errs[-1]}
    return out
