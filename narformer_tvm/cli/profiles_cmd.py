"""``profiles``: the hardware profiles estimate can use, and their accuracy."""
from __future__ import annotations

import json

import click

from narformer_tvm.cli.ui import make_console


@click.group()
def profiles():
    """Hardware profiles: which exist, what hardware they describe, how accurate they are."""


@profiles.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def profiles_list(as_json):
    """Every installed profile: hardware, configuration, training data, held-out and published MAPE."""
    from rich.table import Table

    from narformer_tvm.profiles import (
        default_profile,
        hardware_differences,
        list_profiles,
    )

    rows = []
    default = default_profile()
    for name, folder in list_profiles().items():
        meta = json.loads((folder / "profile.json").read_text())
        fp = meta.get("fingerprint") or {}
        rows.append({"name": name, "folder": str(folder), "default": name == default,
                     "kind": meta.get("kind", "shipped"), "calibration": meta.get("calibration"),
                     "matches_this_machine": bool(fp) and not hardware_differences(fp),
                     "cpu": fp.get("cpu_id") or fp.get("cpu"), "gpu": fp.get("gpu"),
                     "runtime": meta.get("runtime"), "target": meta.get("target"), "threads": meta.get("threads"),
                     "opt_level": (meta.get("config") or {}).get("opt_level", "all"),
                     "variant": meta.get("variant", "fp32"),
                     "labels": meta.get("labels"), "train_samples": meta.get("train_samples"),
                     "calibration_models": meta.get("calibration_models"),
                     "held_out": meta.get("metrics"), "published": meta.get("published"),
                     "drift": meta.get("drift") or []})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    t = Table(title="hardware profiles (estimate uses the default, or --predictor NAME)", title_justify="left")
    for col in ("profile", "kind", "hardware", "configuration", "trained on", "held-out MAPE", "published MAPE",
                "here"):
        t.add_column(col)
    for r in rows:
        held, pub = r["held_out"] or {}, r["published"] or {}
        t.add_row(r["name"] + (" (default)" if r["default"] else ""),
                  r["kind"] + (f" ({r['calibration']['method']})" if r["calibration"] else ""), r["gpu"] or r["cpu"] or "?",
                  f"{r['runtime']} {r['target']}, {r['threads']} thread{'' if r['threads'] == 1 else 's'}"
                  + (f", opt {r['opt_level']}" if r["opt_level"] != "all" else "")
                  + (f", {r['variant']} models" if r["variant"] != "fp32" else ""),
                  f"{r['train_samples'] or r['calibration_models'] or '?'} models",
                  (f"{100 * held['mape']:.2f}% (n={held['n']})" if "mape" in held else "")
                  + (" [yellow](machine drifted)[/yellow]" if r["drift"] else ""),
                  f"{100 * pub['mape']:.2f}% (n={pub['n']})" if "mape" in pub else "",
                  "yes" if r["matches_this_machine"] else "no")
    make_console().print(t)


@profiles.command("rescore")
@click.argument("profile")
def profiles_rescore(profile):
    """Recompute PROFILE's accuracy in profile.json (name or folder) for the predictor beside it."""
    from pathlib import Path

    from narformer_tvm.learn.shipping import rescore_profile
    from narformer_tvm.profiles import list_profiles

    folder = Path(profile) if Path(profile).is_dir() else list_profiles().get(profile)
    if folder is None or not (folder / "profile.json").is_file():
        raise click.UsageError(f"no profile {profile!r} (see `narformer-tvm profiles list`)")
    meta = rescore_profile(folder)
    for block in ("metrics", "published"):
        if meta.get(block):
            m = meta[block]
            click.echo(f"{block}: MAPE {100 * m['mape']:.2f}%, Acc(10%) {100 * m['acc10']:.1f}%, "
                       f"tau {m['kendall_tau']:.3f} (n={m['n']})")
