"""The ``narformer-tvm`` command group and entry point.

Exit codes: 0 ok, 1 runtime failure, 2 usage or bad input. Only the CLI turns errors into messages and
exit codes; heavy imports (torch, onnx, tvm) happen inside the commands.
"""
from __future__ import annotations

import sys

import click

from narformer_tvm import __version__
from narformer_tvm.cli.calibrate_cmd import calibrate
from narformer_tvm.cli.dataset_cmd import dataset
from narformer_tvm.cli.evaluate_cmd import evaluate
from narformer_tvm.cli.inspect_cmd import estimate, inspect
from narformer_tvm.cli.nas_cmd import nas
from narformer_tvm.cli.profile_cmd import profile, zoo
from narformer_tvm.cli.profiles_cmd import profiles
from narformer_tvm.cli.train_cmd import export, train
from narformer_tvm.cli.tune_cmd import tune, tune_ort_cmd, tunedb
from narformer_tvm.cli.ui import interrupt_on_term, report_error
from narformer_tvm.errors import NarformerError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="narformer-tvm")
def cli():
    """Predict how fast a neural network runs on given hardware, without running it."""


for _command in (inspect, estimate, calibrate, profiles, zoo, profile, dataset, train, export, evaluate, tune, tune_ort_cmd,
                 tunedb, nas):
    cli.add_command(_command)


OPTIONAL_MODULES = {"torch": "train", "matplotlib": "train", "tvm": "tvm", "xgboost": "tvm"}  # module -> extra


def main(argv: list[str] | None = None) -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt_on_term)
    try:
        rv = cli.main(args=argv, prog_name="narformer-tvm", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except NarformerError as e:
        report_error(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except ModuleNotFoundError as e:
        extra = OPTIONAL_MODULES.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        report_error(NarformerError(f"this command needs {e.name}, which is not installed",
                               hint=f"pip install 'narformer-tvm[{extra}]'"))
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
