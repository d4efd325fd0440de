"""Errors raised by model_tools (light: imports nothing heavy).

Callers catch :class:`ModelToolsError` for anything this package refuses; the
subclasses say which step failed. Third-party errors (torch, onnxruntime,
protobuf) are wrapped at the boundary so the original stays in ``__cause__``.
"""

from __future__ import annotations


class ModelToolsError(Exception):
    """Root of every error model_tools raises on purpose."""


class ConfigError(ModelToolsError, ValueError):
    """An argument is out of range or of the wrong kind; the message says what was expected."""


class DataError(ModelToolsError):
    """A data set could not be loaded or split as asked."""


class TrainingError(ModelToolsError):
    """Training could not run (device missing, loss diverged)."""


class ExportError(ModelToolsError):
    """Exporting a model to ONNX failed; the message names the step that failed."""


class ParityError(ExportError):
    """The exported model's outputs differ from the source model's beyond tolerance."""

    def __init__(self, max_abs_diff: float, tolerance: float, *, batch_size: int) -> None:
        self.max_abs_diff = max_abs_diff
        self.tolerance = tolerance
        self.batch_size = batch_size
        super().__init__(
            f"ONNX parity failed at batch size {batch_size}: "
            f"max abs difference {max_abs_diff:.3g} above tolerance {tolerance:.3g}"
        )


class InvalidModelError(ModelToolsError):
    """A file is not a loadable ONNX model (missing, truncated, corrupt or not ONNX at all)."""
