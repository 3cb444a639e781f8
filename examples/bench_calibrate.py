"""How accurate `calibrate` makes a shipped predictor on networks outside its calibration set.

    narformer-tvm calibrate --budget 30m --name bench-cal        # or this script's largest --budgets
    python examples/bench_calibrate.py --test-db profiles/cpu-onnxruntime/real-architectures \
        --budgets 2,5,10,30 --out docs/results/calibrate.md

For each budget (minutes of profiling, taken as prefixes of the calibration run in the order it
measured, its clock the sum of the rows' measuring times, so that a run resumed in several sittings
counts only time spent profiling) the calibration rows measured within it are split and adapted
exactly as `calibrate` does (rescalings and, with torch, fine-tuning and training from scratch, chosen
by cross-validation), and the result is scored on the test dataset: models measured on this
machine under the same configuration and never in the calibration set (published networks). Beside
it, on the same rows: every adaptation's own score, the unadapted base and a FLOPs+MAC regression. The
configuration's noise floor is the MAPE between two passes of the test models where the test dataset
has a repeat pass (`profile --repeat-pass 1`). Finished budgets are kept in the .json beside --out: a
rerun resumes.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHOICE = "cross-validation"  # how calibrate judges adaptations; results judged otherwise are not resumed
LEVEL_WORDS = {"reference": "reference-corrected", "probes": "probe-level-corrected"}


def evaluate_budget(minutes, cal, clock, test, p_cal, p_test, ckpt, s_cal, s_test, methods, level=None) -> dict:
    """What `calibrate` would have chosen from the rows measured within ``minutes``, scored on ``test``;
    every adaptation's own test score beside. ``level``: the reference network's latency when each
    calibration row was measured; given, the rows' labels are brought to its median over the budget."""
    from narformer_tvm.calibrate import accuracy, adapt, level_corrected
    from narformer_tvm.learn.train import LinearBaseline

    t_test = np.array([s.latency_ms for s in test])
    k, fit, hold = budget_rows(cal, clock, minutes)
    if level is not None:  # brought to the budget's median level, as calibrate does over its rows
        cal = level_corrected(cal, level, to=float(np.median(level[k])))
    rows = lambda idx: [cal[i] for i in idx]  # noqa: E731
    fitted = adapt(rows(fit), p_cal[fit], s_cal[fit], methods, ckpt)
    out = {"minutes": minutes, "calibration_models": int(len(k)), "seconds": fitted.seconds,
           "method": fitted.method, "methods": list(methods), "adapt_s": sum(fitted.seconds.values()),
           "validation": {m: float(e.mean()) for m, e in fitted.errors.items()}}
    out["by_method"] = {m: accuracy(fitted.predict(m, test, p_test, s_test), t_test) for m in fitted.errors}
    out["calibrated"] = out["by_method"][out["method"]]
    t_hold = np.array([cal[i].latency_ms for i in hold])
    out["held_out_calibration"] = accuracy(fitted.predict(fitted.method, rows(hold), p_cal[hold], s_cal[hold]), t_hold)
    out["flops_mac"] = accuracy(np.array(LinearBaseline(("flops", "memory")).fit(rows(fit)).predict(test)), t_test)
    return out


def test_models(test: list, cal: list, exclude: str) -> list:
    """The test samples scored: without those named in ``exclude`` (comma-separated) and without any whose
    graph is also a calibration row's."""
    excluded = set(filter(None, exclude.split(",")))
    if excluded - {s.name for s in test}:
        raise SystemExit(f"--exclude: no test model named {sorted(excluded - {s.name for s in test})}")
    digests = {s.table.digest() for s in cal}
    return [s for s in test if s.name not in excluded and s.table.digest() not in digests]


def budget_rows(cal: list, clock: np.ndarray, minutes: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the calibration rows profiled within ``minutes``; of those, the ones adapted on and the
    ones `calibrate` holds out (as it would have split them)."""
    from narformer_tvm.calibrate import held_out

    k = np.flatnonzero(clock <= 60 * minutes)
    held = held_out([cal[i].key for i in k])
    return k, k[~held], k[held]


def main() -> None:
    from narformer_tvm.calibrate import (TRAINED, accuracy, base_view, finetune_checkpoint, methods_of, probe_levels,
                                         reference_levels)
    from narformer_tvm.learn.samples import load_samples
    from narformer_tvm.model.load import load_predictor
    from narformer_tvm.profiles import list_profiles, resolve_predictor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="bench-cal", help="the calibrated user profile (its calibration.db)")
    ap.add_argument("--base", default="cpu-onnxruntime")
    ap.add_argument("--test-db", required=True, help="models measured here under the same configuration")
    ap.add_argument("--budgets", default="2,5,10,30", help="minutes of profiling")
    ap.add_argument("--no-finetune", action="store_true", help="rescalings only (as without torch)")
    ap.add_argument("--include-noisy", action="store_true", help="also calibrate on rows flagged noisy (as calibrate's flag)")
    ap.add_argument("--noise-pass", default="repeat", help="the test dataset's pass to set against its main pass")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/calibrate.md")
    ap.add_argument("--test-mean-passes", action="store_true",
                    help="label each test model by the geometric mean of its passes (sittings before and after the "
                         "calibration average out a machine whose level drifts)")
    ap.add_argument("--test-pass", default="main",
                    help="label each test model by this pass of the test dataset only (e.g. one measured after a fix)")
    ap.add_argument("--exclude", default="", help="test models to leave out, by name (comma-separated): e.g. "
                    "a file exported before a fix, whose latency no model of its kind has")
    ap.add_argument("--level", choices=("auto", "reference", "probes", "measured"), default="auto",
                    help="bring the calibration labels to the budget's median level of the rows' regime probes (the "
                         "median of PROBE_LEVEL_ROWS rows around each), of the reference network's checks, or keep them "
                         "as measured; auto: as calibrate does (probes where the rows carry them, else the checks)")
    ap.add_argument("--no-reference-correct", dest="level", action="store_const", const="measured",
                    help="the same as --level measured")
    ap.add_argument("--test-how", default="", help="the command that measured --test-db, for the reproduce block")
    args = ap.parse_args()

    folder = list_profiles()[args.profile]
    cal, _ = load_samples(folder / "calibration.db", include_noisy=args.include_noisy)
    test, _ = load_samples(args.test_db, mean_passes=args.test_mean_passes, pass_=args.test_pass)
    test = test_models(test, cal, args.exclude)
    base = load_predictor(resolve_predictor(args.base))
    (p_cal, s_cal), (p_test, s_test) = base_view(base, cal), base_view(base, test)
    t_test = np.array([s.latency_ms for s in test])
    at = profiling_clock(folder / "calibration.db")
    clock = np.array([at[s.key] for s in cal])
    levels = {"reference": reference_levels, "probes": probe_levels}
    used = args.level if args.level != "auto" else (  # as calibrate: the probes where the rows carry them
        "probes" if probe_levels(folder / "calibration.db", cal) is not None else "reference")
    level = levels[used](folder / "calibration.db", cal) if used in levels else None
    ckpt = None if args.no_finetune else finetune_checkpoint(args.base)
    methods = methods_of(folder, args.base)
    state_path = args.out.with_suffix(".json")
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    labels = ("mean of passes" if args.test_mean_passes else f"{args.test_pass} pass") + (
        f" without {args.exclude}" if args.exclude else "") + (
        f"; calibration labels {LEVEL_WORDS[used]}" if level is not None else "")
    if state.get("test_labels", "main pass") != labels or state.get("choice") != CHOICE:  # scored otherwise: again
        state = {}
    # a row chosen among more methods stands where it did not choose the one left out (choose's order)
    done = {r["minutes"]: {**r, "methods": list(methods)} for r in state.get("rows", [])
            if "by_method" in r and set(methods) <= set(r.get("methods", r["by_method"]))
            and (r["method"] in methods or (ckpt is not None and r["method"] in TRAINED))
            and (ckpt is None) == ("finetune" not in r["by_method"])}  # trained or not, as this run would
    rows = []
    for minutes in [float(b) for b in args.budgets.split(",")]:
        if minutes not in done or done[minutes]["calibration_models"] != int((clock <= 60 * minutes).sum()):
            done[minutes] = evaluate_budget(minutes, cal, clock, test, p_cal, p_test, ckpt, s_cal, s_test, methods,
                                            level)
        rows.append(done[minutes])
        state = {"base": accuracy(p_test, t_test), "rows": rows, "test_labels": labels, "choice": CHOICE}
        state_path.write_text(json.dumps(state, indent=2) + "\n")
        print(json.dumps({k: rows[-1][k] for k in ("minutes", "calibration_models", "method", "validation")}),
              flush=True)
    floor = noise_floor_of(args.test_db, args.noise_pass)
    every, _ = load_samples(folder / "calibration.db", include_noisy=True)
    clean = cal if not args.include_noisy else load_samples(folder / "calibration.db")[0]
    write_report(args, folder, cal, test, state, floor, by_family(cal, p_cal, every, {s.key for s in clean}))


def by_family(cal, p_cal, every, clean: set[str]) -> list[str]:
    """Markdown rows: per family of the calibration set, measured / unadapted-base latency (median and
    spread in log) and the share of rows flagged noisy: where the configuration departs from the base."""
    ratios: dict[str, list[float]] = {}
    for s, p in zip(cal, p_cal):
        ratios.setdefault(s.family, []).append(float(np.log(s.latency_ms / p)))
    flagged = {}
    for s in every:
        flagged.setdefault(s.family, []).append(s.key not in clean)
    rows = sorted(ratios.items(), key=lambda kv: np.median(kv[1]))
    return [f"| {f} | {len(r)} | {np.exp(np.median(r)):.2f} | {np.std(r):.2f} | {sum(flagged[f])}/{len(flagged[f])} |"
            for f, r in rows]


def write_report(args, folder, cal, test, state, floor, families) -> None:
    from narformer_tvm.profiles import list_profiles

    rows, base_acc = state["rows"], state["base"]
    corrected = next((w for w in LEVEL_WORDS.values() if w in state.get("test_labels", "")), None)
    here = json.loads((folder / "profile.json").read_text())
    here_fp = here.get("fingerprint") or {}
    base_fp = json.loads((list_profiles()[args.base] / "profile.json").read_text()).get("fingerprint") or {}
    diffs = "; ".join(f"{k} {base_fp[k]!r} -> {here_fp.get(k)!r}" for k in base_fp if base_fp[k] != here_fp.get(k))
    pct = lambda a: f"{100 * a['mape']:.1f}%" if a else "-"  # noqa: E731
    lines = [f"# `calibrate`: the shipped `{args.base}` predictor adapted on this machine", "",
             f"Calibration: `{folder}` ({len(cal)} models measured in all); test: `{args.test_db}`, "
             f"{len(test)} models never in the calibration set. This machine against the base profile's: "
             f"{diffs or 'same'}"
             f"; configuration {json.dumps(here.get('config'), sort_keys=True)}"
             + (f", every model measured as its {here['variant']} version" if here.get("variant", "fp32") != "fp32" else "")
             + f". Unadapted base on the test models: MAPE "
             f"{100 * base_acc['mape']:.1f}%, Acc(10%) {100 * base_acc['acc10']:.0f}%, bias {100 * base_acc['bias']:+.0f}%."
             + (" Test labels: the geometric mean of each model's passes." if args.test_mean_passes else "")
             + (f" Calibration labels {corrected}: brought to the median level over each budget." if corrected else "")
             + (f" Test labels: the `{args.test_pass}` pass alone." if args.test_pass != "main" else "")
             + (f" Left out of the test: {args.exclude}." if args.exclude else "")
             + (f" Noise floor of this configuration (MAPE between the main and `{args.noise_pass}` passes over {floor['pairs']} test models): "
                f"{100 * floor['mape']:.2f}%." if floor else ""), "",
             "The adaptation is the simplest one within one standard error of the lowest cross-validated MAPE on "
             "the calibration rows not held out (as `calibrate` chooses); every adaptation's test MAPE is beside it.", "",
             "| profiling (min) | calibration models | chosen adaptation | test MAPE (90% interval) | Acc(10%) | "
             "bias | held-out calibration MAPE | training s | scaled | loglinear | descriptors | fine-tuned | from scratch | "
             "FLOPs+MAC |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        c, h = r["calibrated"], r["held_out_calibration"]
        lines.append(f"| {r['minutes']:g} | {r['calibration_models']} | {r['method']} | {100 * c['mape']:.1f}% "
                     f"({100 * c['mape_90'][0]:.1f}-{100 * c['mape_90'][1]:.1f}%) | {100 * c['acc10']:.0f}% | "
                     f"{100 * c['bias']:+.1f}% | {100 * h['mape']:.1f}% (n={h['n']}) | {r.get('adapt_s', 0):.0f} | "
                     + " | ".join(pct(r["by_method"].get(m)) for m in ("scaled", "loglinear", "descriptors", "finetune", "scratch"))
                     + f" | {pct(r['flops_mac'])} |")
    within = [r for r in rows if r["minutes"] <= 10]
    if within:
        r = within[-1]
        c = r["calibrated"]
        met = c["mape"] <= 0.08 and c["acc10"] >= 0.70
        lines += ["", f"Target (MAPE <= 8% and Acc(10%) >= 70% after <= 10 minutes of profiling): "
                  f"{'**met**' if met else '**missed**'} at {r['minutes']:g} min: MAPE {100 * c['mape']:.1f}%, "
                  f"Acc(10%) {100 * c['acc10']:.0f}%. Where the test models were measured in other sittings than the "
                  "calibration, a level drift between sittings counts against it."]
    long = [r for r in rows if r["minutes"] >= 30]
    if long and floor:
        h = long[-1]["held_out_calibration"]
        met = h["mape"] <= 1.5 * floor["mape"]
        lines += ["", f"Target (held-out calibration MAPE within 1.5x the noise floor at 30 minutes): "
                  f"{'**met**' if met else '**missed**'}: {100 * h['mape']:.1f}% against 1.5 x "
                  f"{100 * floor['mape']:.2f}% = {150 * floor['mape']:.2f}%."]
    lines += ["", "Where this configuration departs from the base: per family of the calibration rows, measured "
              "latency over the unadapted base's prediction (a family far from the others, or widely spread, is "
              "what one factor cannot fix), and rows flagged noisy (block spread or contention; "
              + ("used here" if args.include_noisy else "left out") + ").", "",
              f"| family | {'all' if args.include_noisy else 'clean'} rows | measured / base (median) | spread (std of log) | flagged noisy |",
              "| --- | --- | --- | --- | --- |", *families]
    lines += ["", "Reproduce:", "", "```bash"] + ([args.test_how] if args.test_how else []) + [
              f"narformer-tvm calibrate --threads {here.get('config', {}).get('threads')} "
              + (f"--opt-level {here['config']['opt_level']} " if here.get("config", {}).get("opt_level", "all") != "all"
                 else "") + (f"--variant {here['variant']} " if here.get("variant", "fp32") != "fp32" else "")
              + f"--budget <largest>m --name {args.profile}",
              f"python examples/bench_calibrate.py --profile {args.profile} --test-db {args.test_db} --budgets "
              f"{args.budgets} --noise-pass {args.noise_pass} " + ("--include-noisy " if args.include_noisy else "")
              + ("--test-mean-passes " if args.test_mean_passes else "")
              + (f"--test-pass {args.test_pass} " if args.test_pass != "main" else "")
              + ("--no-finetune " if args.no_finetune else "")
              + (f"--exclude {args.exclude} " if args.exclude else "")
              + (f"--level {args.level} " if args.level != "auto" else "")
              + f"--out {args.out.relative_to(ROOT) if args.out.is_absolute() and args.out.is_relative_to(ROOT) else args.out}", "```", ""]
    args.out.write_text("\n".join(lines))
    print(f"written {args.out} ({time.strftime('%H:%M')})")


def profiling_clock(db: Path) -> dict[str, float]:
    """Model key -> seconds of profiling (the measuring times of every row, failures included, summed in
    the order they were measured) by the end of its main measurement."""
    from narformer_tvm.data.store import Store

    with Store(db, readonly=True) as store:
        q = ("SELECT d.key, m.pass, COALESCE(m.duration_s, 0) FROM measurements m JOIN models d ON d.id = m.model_id "
             "ORDER BY m.measured_at")
        clock, out = 0.0, {}
        for key, pass_, duration in store.db.execute(q):
            clock += duration
            if pass_ == "main":
                out.setdefault(key, clock)
        return out


def noise_floor_of(db, second: str) -> dict | None:
    """MAPE between the main pass and the ``second`` pass of the dataset's models (clean rows), or None."""
    from narformer_tvm.data.labels import LABEL_STATISTIC, noise_floor
    from narformer_tvm.data.store import Store

    with Store(db, readonly=True) as store:
        if second not in store.pass_names(None):
            return None
        floor = noise_floor(store, second=second).get(LABEL_STATISTIC)
    return floor if floor and floor.get("pairs") else None


if __name__ == "__main__":
    main()
