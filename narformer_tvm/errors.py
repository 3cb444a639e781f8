"""The package's error hierarchy. Only ``cli.py`` turns these into exit codes and messages."""
from __future__ import annotations


class NarformerError(Exception):
    """Base class: a message for the user, an optional hint, and the CLI exit code."""

    exit_code = 1  # runtime failure

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class InputError(NarformerError):
    """The user gave us something unusable (a bad file, a bad option value)."""

    exit_code = 2


class ModelLoadError(InputError):
    """An ONNX file that cannot be read or analysed."""


class UnsupportedOpsetError(ModelLoadError):
    """The model's default-domain opset is outside the range we analyse."""


class InputShapeError(ModelLoadError):
    """A model input whose shape is dynamic and was not fixed with --input-shape."""


class CheckpointError(InputError):
    """A predictor checkpoint of another format, version or vocabulary."""


class PredictorNotFoundError(InputError):
    """No predictor at the given path and no shipped profile of that name."""
