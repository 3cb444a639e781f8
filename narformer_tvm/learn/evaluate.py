"""Evaluation protocols (same-distribution, leave-one-family-out, random), baselines and reports.

Every method runs in the same harness on the same splits: FLOPs and FLOPs+MAC regressions, the
NNLP GNN (GraphSAGE) and NAR-Former V2 with the ablation switches of the paper's Table 5.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from narformer_tvm.errors import InputError
from narformer_tvm.fileio import read_results, resume_results, write_atomically
from narformer_tvm.learn.metrics import mape, summary
from narformer_tvm.learn.samples import Sample
from narformer_tvm.learn.splits import (
    carve_validation,
    split_leave_one_family_out,
    split_random,
    split_same_distribution,
)
from narformer_tvm.learn.train import (
    FitConfig,
    LinearBaseline,
    TrainOptions,
    predict_samples,
    train_predictor,
)

NARFORMER = TrainOptions()


# Table 5 of the paper, bottom-up: the NNLP-style GNN, then a Transformer gaining each component.
ABLATIONS: dict[str, TrainOptions] = {
    "ablation1_gnn_raw": TrainOptions(model={"backbone": "gnn"}, features={"attr_encoding": "raw"}),
    "ablation2_transformer_raw": TrainOptions(model={"graph_attention": False, "gffn": False, "type_enhance": False},
                                              features={"attr_encoding": "raw"}),
    "ablation3_+encoding": TrainOptions(model={"graph_attention": False, "gffn": False, "type_enhance": False}),
    "ablation4_+graph_attention": TrainOptions(model={"gffn": False, "type_enhance": False}),
    "ablation5_+gffn": TrainOptions(model={"type_enhance": False}),
    "ablation6_+type_enhance": TrainOptions(),
}


METHODS: dict[str, TrainOptions | LinearBaseline | None] = {
    "flops": None, "flops_mac": None,  # built per run (stateful)
    "nnlp": TrainOptions(model={"backbone": "gnn"}),
    "narformer": NARFORMER,
    # NAR-Former V2 correcting a FLOPs + memory-access line fitted to the training set (not in the paper)
    "narformer_flops_mac": TrainOptions(model={"readout": "flops_mac"}),
    # the same line per operator: the model corrects each operator's time per GFLOP and per GB
    "narformer_roofline": TrainOptions(model={"readout": "roofline"}),
    "narformer_by_kind": TrainOptions(model={"readout": "by_kind"}),
    # flops_mac with each operator told whether ONNX Runtime fuses it into a neighbour's kernel
    "narformer_flops_mac_fusion": TrainOptions(model={"readout": "flops_mac"}, features={"fusion": True}),
    **ABLATIONS,
}


REGRESSIONS = ("flops", "flops_mac")  # fitted in a moment: methods without a training

GROUPS = {"main": ["flops", "flops_mac", "nnlp", "narformer", "narformer_flops_mac"], "ablations": list(ABLATIONS),
          "all": list(METHODS)}


def method_names(spec: str) -> list[str]:
    """Methods of a comma-separated list of names and groups (main, ablations, all), each once, in order."""
    names = [m for n in spec.split(",") if n.strip() for m in GROUPS.get(n.strip(), [n.strip()])]
    bad = [n for n in names if n not in METHODS]
    if bad:
        raise InputError(f"unknown method {', '.join(bad)}", hint=f"choose from: main, ablations, all, {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def conflicting_overrides(methods: list[str], model_overrides: dict) -> list[str]:
    """Where a run's model options would be silently overruled: methods that fix the same setting."""
    out = []
    for name in methods:
        opts = METHODS[name]
        if isinstance(opts, TrainOptions):
            out += [f"{name} fixes {k}={opts.model[k]!r}" for k, v in model_overrides.items()
                    if k in opts.model and opts.model[k] != v]
    return out


def run_method(name: str, train: list[Sample], val: list[Sample], test: list[Sample], fit: FitConfig,
               model_overrides: dict, progress: Callable[[str], None] | None):
    """(predictions on ``test``, predictions on ``val``, the trained Predictor or None for the regressions)."""
    if name in REGRESSIONS:
        base = LinearBaseline(("flops",) if name == "flops" else ("flops", "memory")).fit(train + val)
        return base.predict(test), base.predict(val), None
    opts = METHODS[name]
    # What defines a method (its backbone, readout, ablation switches) wins over the run's overrides.
    opts = replace(opts, fit=fit, model={**model_overrides, **opts.model})
    pred = train_predictor(train, val, opts, progress=progress)
    return predict_samples(pred, test)[0], predict_samples(pred, val)[0] if val else [], pred


@dataclass
class Result:
    method: str
    protocol: str
    run: int
    split: str  # e.g. "same", or the held-out family
    names: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    pred: list[float] = field(default_factory=list)
    true: list[float] = field(default_factory=list)
    val_mape: float | None = None  # on the validation part of training (what to choose a method by)

    def metrics(self) -> dict:
        return summary(self.pred, self.true)


def splits_for(protocol: str, samples: list[Sample], seed: int,
               hold_out: Sequence[str] | None = None) -> list[tuple[str, list[int], list[int]]]:
    """(split name, train indices, test indices) per split; ``hold_out`` keeps only those families' lofo splits."""
    if hold_out and protocol != "lofo":
        raise InputError("choosing held-out families applies to the lofo protocol only", hint="add --protocol lofo")
    if protocol == "same":
        return [("same", *split_same_distribution(samples))]
    if protocol == "random":
        return [("random", *split_random(samples, 0.1, seed))]
    if protocol == "lofo":
        families = sorted({s.family for s in samples})
        if bad := sorted(set(hold_out or ()) - set(families)):
            raise InputError(f"no family {', '.join(bad)} in this dataset", hint=f"choose from: {', '.join(families)}")
        return [(fam, *split_leave_one_family_out(samples, fam)) for fam in families if not hold_out or fam in hold_out]
    raise InputError(f"unknown protocol {protocol!r}", hint="use same, lofo or random")


def evaluate(samples: list[Sample], protocol: str, methods: list[str], runs: int = 1, fit: FitConfig = FitConfig(),
             model_overrides: dict | None = None, progress: Callable[[str], None] | None = None,
             checkpoint: str | Path | None = None, notice: Callable[[str], None] = warnings.warn,
             hold_out: Sequence[str] | None = None,
             on_trained: Callable[[Result, object], None] | None = None,
             steps: Callable[[int, int], None] | None = None) -> list[Result]:
    """Every method on every split of every run. With ``checkpoint`` (a JSON file) each finished
    (method, run, split) is saved at once and reused when the same evaluation is started again; a
    file of other settings is moved aside (``notice`` says where). ``hold_out`` limits lofo to some
    families (processes holding out different families can be merged: their splits are disjoint).
    ``on_trained(result, predictor)`` gets each trained model as it finishes (e.g. to keep the winner);
    ``steps(done, total)`` counts the trainings this call runs (not the regressions, which take no time,
    nor the splits reused)."""
    key = {"protocol": protocol, "fit": asdict(fit), "model": model_overrides or {},
           "samples": sorted(s.key for s in samples)}
    state = resume_results(Path(checkpoint) if checkpoint else None, lambda st: st.get("key") == key, notice)
    done = {(r["method"], r["run"], r["split"]): Result(**r) for r in (state or {}).get("results", [])}
    results = []
    plan = [(run, *split) for run in range(runs)
            for split in splits_for(protocol, samples, seed=run, hold_out=hold_out)]  # (run, split, train, test)
    total, ran = sum((name, run, split) not in done and name not in REGRESSIONS
                     for run, split, _, _ in plan for name in methods), 0
    if steps and total:
        steps(0, total)  # the bar shows what is left before the first training ends
    for run, split, train_idx, test_idx in plan:
        tr_idx, val_idx = carve_validation(train_idx, 0.1, seed=run)
        assert not set(test_idx) & (set(tr_idx) | set(val_idx)), "test leaked into training"
        train, val, test = ([samples[i] for i in ix] for ix in (tr_idx, val_idx, test_idx))
        for name in methods:
            if (name, run, split) in done:
                results.append(done[(name, run, split)])
                continue
            if progress:
                progress(f"run {run + 1}/{runs} split {split}: {name}")
            pred, val_pred, model = run_method(name, train, val, test, replace(fit, seed=fit.seed + run),
                                               model_overrides or {}, progress)
            val_mape = mape(val_pred, [s.latency_ms for s in val]) if val else None
            results.append(Result(name, protocol, run, split, [s.name for s in test], [s.family for s in test],
                                  [float(p) for p in pred], [s.latency_ms for s in test],
                                  float(val_mape) if val_mape is not None else None))
            if on_trained and model is not None:
                on_trained(results[-1], model)
            if checkpoint:
                save_finished(Path(checkpoint), key, results[-1])
            if steps and name not in REGRESSIONS:
                ran += 1
                steps(ran, total)
    return results


def save_finished(checkpoint: Path, key: dict, result: Result) -> None:
    """Add one finished (method, run, split) to the checkpoint. Under a lock, and merged with what the
    file holds now: processes evaluating disjoint parts (``hold_out``, methods) can share one --out."""
    import fcntl

    with open(checkpoint.with_name(checkpoint.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = read_results(checkpoint, lambda st: st.get("key") == key) if checkpoint.exists() else None
        merged = {(r["method"], r["run"], r["split"]): r for r in (state or {}).get("results", [])}
        merged[(result.method, result.run, result.split)] = result.__dict__
        state = {"key": key, "results": list(merged.values())}
        write_atomically(checkpoint, lambda tmp: tmp.write_text(json.dumps(state)))


def cap_per_family(samples: Sequence[Sample], n: int) -> list[Sample]:
    """The first ``n`` models of each family in generation order (a smaller, still balanced dataset)."""
    by_family: dict[str, list[Sample]] = {}
    for s in sorted(samples, key=lambda s: s.model_id):
        by_family.setdefault(s.family, []).append(s)
    return sorted((s for fam in by_family.values() for s in fam[:n]), key=lambda s: s.model_id)


def score_predictor(pred, samples: Sequence[Sample], name: str) -> Result:
    """A trained predictor on every sample, nothing fitted: how it does on models it never saw
    (published networks, another dataset)."""
    mean, _ = predict_samples(pred, samples)
    return Result(name, "all", 0, "all", [s.name for s in samples], [s.family for s in samples],
                  [float(p) for p in mean], [s.latency_ms for s in samples])


def predictions_on_unseen(db: str | Path, predictor_spec: str):
    """A shipped or saved predictor's predictions on the models of ``db`` whose graphs it never trained
    on, with its training labels' definition: (profile, samples, predictions, dataset config, left out)."""
    from narformer_tvm.data.labels import label_options
    from narformer_tvm.learn.samples import load_samples, unseen_in_training
    from narformer_tvm.learn.train import predict_samples
    from narformer_tvm.model.load import load_predictor
    from narformer_tvm.profiles import resolve_predictor

    predictor = load_predictor(resolve_predictor(predictor_spec))
    profile = predictor.profile
    samples, cfg = load_samples(db, **label_options(profile))
    samples, left_out = unseen_in_training(samples, profile)
    pred, _ = predict_samples(predictor, samples)
    return profile, samples, [float(p) for p in pred], cfg, left_out


def aggregate(results: list[Result]) -> dict[str, dict]:
    """Per method: metrics averaged over splits, then mean and best over runs (as the paper's avg/best)."""
    out: dict[str, dict] = {}
    for method in dict.fromkeys(r.method for r in results):
        per_run: dict[int, list[dict]] = {}
        for r in results:
            if r.method == method:
                per_run.setdefault(r.run, []).append(r.metrics())
        run_means = [{k: float(np.mean([m[k] for m in ms])) for k in ms[0] if k != "n"} for ms in per_run.values()]
        keys = run_means[0].keys()
        out[method] = {"mean": {k: float(np.mean([r[k] for r in run_means])) for k in keys},
                       "best": {k: (min if k in ("mape", "rmspe") else max)(r[k] for r in run_means) for k in keys},
                       "runs": len(run_means)}
    return out


def ensembles_of_runs(results: list[Result]) -> dict[str, list[Result]]:
    """Each method run more than once on the same test sets, as one predictor: per split, the mean of
    its runs' predictions (how a predictor trained with --members predicts), named "<method>, ensemble
    of N runs"; keyed by the method. Splits whose test set changes with the run (the random protocol)
    are left out."""
    by_split: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        by_split.setdefault((r.method, r.split), []).append(r)
    out: dict[str, list[Result]] = {}
    for (method, split), rs in by_split.items():
        if len(rs) < 2 or any(r.names != rs[0].names for r in rs):
            continue
        pred = np.mean([r.pred for r in rs], axis=0)
        out.setdefault(method, []).append(Result(f"{method}, ensemble of {len(rs)} runs", rs[0].protocol, 0, split,
                                                 rs[0].names, rs[0].families, [float(p) for p in pred], rs[0].true))
    return out


def per_family(results: list[Result], method: str) -> dict[str, dict]:
    fams: dict[str, tuple[list, list]] = {}
    for r in results:
        if r.method == method:
            for f, p, t in zip(r.families, r.pred, r.true):
                fams.setdefault(f, ([], []))
                fams[f][0].append(p)
                fams[f][1].append(t)
    return {f: summary(p, t) for f, (p, t) in sorted(fams.items())}


def validation_mape(results: list[Result]) -> dict[str, float | None]:
    """Per method, the mean validation MAPE over its runs and splits (None where none was recorded)."""
    out = {}
    for method in dict.fromkeys(r.method for r in results):
        vals = [r.val_mape for r in results if r.method == method and r.val_mape is not None]
        out[method] = float(np.mean(vals)) if vals else None
    return {m: v for m, v in out.items() if v is not None}


def markdown(results: list[Result], title: str, noise_floor: float | None = None, command: str = "",
             later_floors: dict[str, float] | None = None) -> str:
    """``later_floors``: the MAPE between the main pass and each later repeat round (another sitting)."""
    ensembles = ensembles_of_runs(results)
    agg = aggregate(results + [e for es in ensembles.values() for e in es])
    lines = [f"## {title}", ""]
    if command:
        lines += ["```", command, "```", ""]
    if noise_floor is not None:
        later = "".join(f"; main pass vs {p}, measured in a later sitting: {100 * v:.2f}%"
                        for p, v in (later_floors or {}).items())
        lines += [f"Dataset noise floor (MAPE between two measurements of the same models): {100 * noise_floor:.2f}%"
                  f"{later}", ""]
    val = validation_mape(results)  # a column only where a run recorded one (scored predictors have none)
    lines += ["| method |" + (" validation MAPE |" if val else "") + " MAPE mean (best) | RMSPE | Acc(10%) | Acc(5%) |"
              " Kendall tau | runs |", "| --- |" + (" --- |" if val else "") + " --- | --- | --- | --- | --- | --- |"]
    for m, a in agg.items():
        mean, best = a["mean"], a["best"]
        v = (f" {100 * val[m]:.2f}% |" if val.get(m) is not None else " |") if val else ""
        lines.append(f"| {m} |{v} {100 * mean['mape']:.2f}% ({100 * best['mape']:.2f}%) | {100 * mean['rmspe']:.2f}% | "
                     f"{100 * mean['acc10']:.1f}% | {100 * mean['acc5']:.1f}% | {mean['kendall_tau']:.3f} | {a['runs']} |")
    if val:
        lines += ["", "Choose between methods by validation MAPE (the part of training held back for early stopping; "
                  "the regressions are fitted on it); the test columns are reported, not chosen on."]
    methods = list(dict.fromkeys(r.method for r in results))
    main = "narformer" if "narformer" in methods else methods[-1]  # the full model comes last in a list
    ens = ensembles.get(main, [])
    runs = len({r.run for r in results if r.method == main})
    extra = (f" ensemble of {runs} runs: MAPE | Acc(10%) |", " --- | --- |") if ens else ("", "")
    lines += ["", f"Per family ({main}, all runs pooled):", "", "| family | n | MAPE | Acc(10%) |" + extra[0],
              "| --- | --- | --- | --- |" + extra[1]]
    ens_family = per_family(ens, ens[0].method) if ens else {}
    for f, m in per_family(results, main).items():
        e = ens_family.get(f)
        lines.append(f"| {f} | {m['n']} | {100 * m['mape']:.2f}% | {100 * m['acc10']:.1f}% |"
                     + (f" {100 * e['mape']:.2f}% | {100 * e['acc10']:.1f}% |" if e else ""))
    for r in results:
        if r.protocol == "all":  # a scored predictor: every model is worth a line
            lines += ["", f"Per model ({r.method}):", "", "| model | measured ms | predicted ms | error |",
                      "| --- | --- | --- | --- |"]
            for n, p, t in sorted(zip(r.names, r.pred, r.true), key=lambda x: x[0]):
                lines.append(f"| {n} | {t:.3f} | {p:.3f} | {100 * (p - t) / t:+.1f}% |")
    return "\n".join(lines) + "\n"


def plot(results: list[Result], out_dir: Path, method: str = "narformer") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [r for r in results if r.method == method] or results
    fams = sorted({f for r in rs for f in r.families})
    colours = {f: plt.cm.tab20(i % 20) for i, f in enumerate(fams)}
    fig, ax = plt.subplots(figsize=(6.5, 6))
    for f in fams:
        p = [x for r in rs for x, ff in zip(r.pred, r.families) if ff == f]
        t = [x for r in rs for x, ff in zip(r.true, r.families) if ff == f]
        ax.scatter(t, p, s=8, color=colours[f], label=f, alpha=0.7)
    lo = min(min(r.true + r.pred) for r in rs)
    hi = max(max(r.true + r.pred) for r in rs)
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="measured latency (ms)", ylabel="predicted latency (ms)",
           title=f"{method}: predicted vs measured")
    ax.legend(fontsize=7, markerscale=2)
    paths = [out_dir / f"{method}_pred_vs_measured.png"]
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    pf = per_family(results, method)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(list(pf), [100 * m["mape"] for m in pf.values()], color=[colours.get(f, "grey") for f in pf])
    ax.set(ylabel="MAPE (%)", title=f"{method}: error per family")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    paths.append(out_dir / f"{method}_mape_per_family.png")
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths


def write_report(results: list[Result], out_dir: str | Path, title: str, noise_floor: float | None = None,
                 command: str = "", later_floors: dict[str, float] | None = None) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = markdown(results, title, noise_floor, command, later_floors)
    methods = list(dict.fromkeys(r.method for r in results))
    for m in methods:
        if m not in REGRESSIONS:
            for p in plot(results, out_dir, m):
                md += f"\n![{p.stem}]({p.name})\n"
    (out_dir / "report.md").write_text(md)
    (out_dir / "results.json").write_text(json.dumps([r.__dict__ for r in results]))
    (out_dir / "summary.json").write_text(json.dumps(aggregate(results), indent=2))
    return out_dir / "report.md"
