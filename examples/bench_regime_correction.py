"""How much of the disagreement between two measurements of one model the regime probes explain.

    python examples/bench_regime_correction.py profiles/cpu-onnxruntime-zen5/train \\
        profiles/cpu-onnxruntime-zen5/published --split-at 2026-11-29T22:00 \\
        --out docs/results/regime-correction.md

For every model measured in two passes (main and repeat, or each ``--passes`` pair, e.g. main
repeat2: a later sitting), the MAPE between the two labels after dividing each by (quicker probe /
the configuration's typical probe) ** exponent (dataset.regime_factor); exponent 0 is the raw label.
The last column divides by dataset.sitting_factor instead: the sitting's median probe over that
level in full, the row's probe within its sitting to REGIME_EXPONENT. ``--split-at`` adds rows for
the pairs repeated before and after a time, to check an exponent on pairs it was not chosen on.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from narformer_tvm.data.labels import REGIME_EXPONENT, paired_rows, regime_factor
from narformer_tvm.data.store import Store

EXPONENTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def pairs(db: Path, first: str = "main", second: str = "repeat") -> list[tuple[dict, dict, str]]:
    """(first pass's row, second pass's row, when the second was measured) for every model measured in both,
    neither row flagged noisy (the pairs of profile.noise_floor)."""
    with Store(db, readonly=True) as store:
        return [(a, b, b["measured_at"]) for a, b in paired_rows(store.rows(pass_=first), store.rows(pass_=second))]


def row(label: str, chosen: list[tuple[dict, dict, str]]) -> str:
    cells = []
    for e in EXPONENTS:
        x = np.array([a["latency_ms"] / regime_factor(a["info"], a["probe_reference"], e) for a, _, _ in chosen])
        y = np.array([b["latency_ms"] / regime_factor(b["info"], b["probe_reference"], e) for _, b, _ in chosen])
        errs = np.abs(x - y) / y
        cells.append(f"{100 * errs.mean():.2f}% (p90 {100 * np.percentile(errs, 90):.1f}%)")
    x = np.array([a["latency_ms"] / a["sitting_factor"] for a, _, _ in chosen])
    y = np.array([b["latency_ms"] / b["sitting_factor"] for _, b, _ in chosen])
    errs = np.abs(x - y) / y
    cells.append(f"{100 * errs.mean():.2f}% (p90 {100 * np.percentile(errs, 90):.1f}%)")
    return f"| {label} | {len(chosen)} | " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db", nargs="+", type=Path)
    ap.add_argument("--passes", nargs=2, action="append", metavar=("FIRST", "SECOND"),
                    help="two passes to compare (default: main repeat); repeatable, a row each")
    ap.add_argument("--split-at", help="also rows for pairs repeated before / after this time (YYYY-MM-DDTHH:MM)")
    ap.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = ap.parse_args()
    head = " | ".join(f"exponent {e:g}" + (" (used)" if e == REGIME_EXPONENT else "") for e in EXPONENTS)
    head += f" | sitting level, then exponent {REGIME_EXPONENT:g} within the sitting"
    lines = [f"| pairs of | n | {head} |", "| --- | --- |" + " --- |" * (len(EXPONENTS) + 1)]
    passes = args.passes or [("main", "repeat")]
    for db, (first, second) in ((db, p) for db in args.db for p in passes):
        found = pairs(db, first, second)
        if not found:
            continue
        lines.append(row(f"`{db}`" + ("" if (first, second) == ("main", "repeat") else f" {first} vs {second}"), found))
        if args.split_at:
            before = [p for p in found if p[2] < args.split_at]
            after = [p for p in found if p[2] >= args.split_at]
            if before and after:
                lines.append(row(f"... repeated before {args.split_at}", before))
                lines.append(row(f"... repeated after {args.split_at}", after))
    table = "\n".join(lines)
    print(table)
    if args.out:
        command = "python examples/bench_regime_correction.py " + " ".join(sys.argv[1:])
        which = ", ".join(f"{a} vs {b}" for a, b in passes)
        args.out.write_text(f"MAPE between two measurements of the same models ({which} pass), each label "
                            "divided by dataset.regime_factor with the exponent (last column: by "
                            "dataset.sitting_factor).\n\n"
                            f"```\n{command}\n```\n\n{table}\n")


if __name__ == "__main__":
    main()
