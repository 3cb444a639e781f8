"""The command line, one module per command group."""
from narformer_tvm.cli.main import cli, main

__all__ = ["cli", "main"]
