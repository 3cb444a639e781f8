"""``calibrate``: a predictor for this machine from a short profiling run."""
from __future__ import annotations

import re
import time

import click

from narformer_tvm.cli.options import opt_level_option, variant_option
from narformer_tvm.cli.ui import make_console, progress_bar


def parse_budget(value: str, option: str = "--budget") -> float:
    """'10m', '90s', '1h', '1h30m' or plain seconds -> seconds."""
    m = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", value or "")
    if not m or not any(m.groups()):
        raise click.BadParameter(f"{value!r} is not a duration; use e.g. 10m, 90s or 1h30m", param_hint=option)
    h, mins, s = (float(g) if g else 0.0 for g in m.groups())
    return 3600 * h + 60 * mins + s


@click.command()
@click.option("--target", type=click.Choice(["llvm", "cuda"]), default="llvm", show_default=True)
@click.option("--runtime", default="onnxruntime", show_default=True, help="A backend (see `profile --list-runtimes`).")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Intra-op threads (0 = physical cores).")
@opt_level_option
@click.option("--budget", default="10m", show_default=True, help="Profiling time, e.g. 5m, 90s, 1h.")
# A shared VM measured 4% faster cold than after minutes of load, and rows at two levels would mislabel each
# other (docs/results/calibrate-intel-warmup.md); 3 minutes: where its reference checks had risen.
@click.option("--warm-up", "warm_up", default="3m", show_default=True,
              help="Load the machine this long before measuring, besides the budget (0 to skip): shared VMs "
                   "run faster cold than after minutes of load.")
@click.option("--base", default=None, help="The shipped profile to adapt (default: the one for this CPU).")
@click.option("--name", default=None, help="The new profile's name (default: BASE-calibrated-RUNTIME-TARGET-Nt, plus -optLEVEL and -VARIANT "
                   "off the defaults).")
@click.option("--rpc-tracker", default="", metavar="HOST:PORT", help="TVM RPC tracker of a remote board.")
@click.option("--rpc-key", default="", help="The board's key at the tracker.")
@click.option("--include-noisy", is_flag=True,
              help="Also use measurements flagged noisy (taken while other work ran on the machine).")
@click.option("--finetune/--no-finetune", default=True, show_default=True,
              help="Also try training weights: the base predictor fine-tuned, and one of its shape trained "
                   "from scratch (needs torch and a source checkout's checkpoint); kept only where one "
                   "validates better than a rescaling.")
@variant_option
def calibrate(target, runtime, threads, opt_level, budget, warm_up, base, name, rpc_tracker, rpc_key,
              include_noisy, finetune, variant):
    """Profile a compact calibration set on this machine within --budget, adapt a shipped predictor to
    it and save it as your own profile, which `estimate` then prefers on this machine.

    The held-out part of the calibration set gives the accuracy to expect here. Interrupted or out of
    budget, a rerun goes on from what was measured. Profiles go to $NARFORMER_USER_DIR/profiles, else the
    platform's user data folder.
    """
    from narformer_tvm.calibrate import calibrate as run
    from narformer_tvm.measure.backends import MeasureConfig

    seconds, warm_s = parse_budget(budget), parse_budget(warm_up, "--warm-up")
    cfg = MeasureConfig(runtime=runtime, target=target, threads=threads, opt_level=opt_level, rpc_tracker=rpc_tracker, rpc_key=rpc_key)
    with progress_bar(log_every_s=30) as bar:
        # the budget, not the list's length, ends profiling: the bar counts its seconds
        task = bar.add_task(f"profiling the calibration set (seconds of the {budget} budget)", total=seconds,
                            status="")
        start = time.monotonic()
        side = {}  # warm-up and training bars
        labels = {"finetune": "fine-tuning the base predictor", "scratch": "training a predictor from scratch"}

        def on_progress(kind, i, n, msg):
            nonlocal start
            if kind == "warm-up":
                if "warm-up" not in side:
                    side["warm-up"] = bar.add_task("warming the machine up (seconds)", total=n, status="")
                bar.update(side["warm-up"], completed=i, status=msg)
                start = time.monotonic()  # the budget starts after the warm-up
            elif kind in labels:
                if kind not in side:
                    side[kind] = bar.add_task(labels[kind], total=None, status="")
                bar.update(side[kind], completed=i, total=n or None, status=msg)
            else:
                bar.update(task, completed=int(min(seconds, time.monotonic() - start)), status=f"{i} models; {msg}")

        result = run(cfg, base, seconds, name, progress=on_progress, include_noisy=include_noisy,
                     allow_finetune=finetune, variant=variant, warm_up_s=warm_s)
    print_result(make_console(), result)


def print_result(con, result) -> None:
    """What a finished calibration says: models measured, the adaptation chosen, the accuracy to expect,
    and whether the machine drifted meanwhile."""
    t, b = result.test, result.test_base
    con.print(f"{result.measured} calibration models measured ({result.profiled_s / 60:.1f} min this run"
              + (f", {result.warm_up_s / 60:.1f} of them warming up" if result.warm_up_s else "")
              + (f"; {result.left} not reached: a rerun continues" if result.left else "") + ").")
    con.print("cross-validated MAPE per adaptation: " + ", ".join(f"{m} {100 * v:.1f}%" for m, v in
                                                             result.validation.items())
              + f" -> {result.calibration['method']}")
    con.print(f"[bold]Expected accuracy here[/bold] ({t['n']} held-out models): MAPE {100 * t['mape']:.1f}% "
              f"(90% interval {100 * t['mape_90'][0]:.1f}-{100 * t['mape_90'][1]:.1f}%), Acc(10%) "
              f"{100 * t['acc10']:.0f}%; the base profile unadapted: MAPE {100 * b['mape']:.1f}%, bias "
              f"{100 * b['bias']:+.0f}%.")
    if result.drift:  # the latest check says most about the machine now
        from narformer_tvm.measure.profiler import DRIFT_LIMIT

        more = (f" ({len(result.drift)} checks off by more than {100 * DRIFT_LIMIT:.0f}%)"
                if len(result.drift) > 1 else "")
        con.print(f"[yellow]drift:[/yellow] {result.drift[-1]}{more}; latencies measured here move with it, and "
                  "the expected accuracy above does not count that: calibrate on a quiet machine")
    con.print(f"profile {result.name!r} written to {result.folder}")
