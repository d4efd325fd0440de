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

    def __init__(self, max_abs_diff: float, tolerance: float, *, batch_size: int, what: str = "ONNX") -> None:
        self.max_abs_diff = max_abs_diff
        self.tolerance = tolerance
        self.batch_size = batch_size
        super().__init__(
            f"{what} parity failed at batch size {batch_size}: "
            f"max abs difference {max_abs_diff:.3g} above tolerance {tolerance:.3g}"
        )


class InvalidModelError(ModelToolsError):
    """A file is not a loadable ONNX model (missing, truncated, corrupt or not ONNX at all)."""


class DataValidationError(DataError):
    """A data set failed validation; ``report`` names every offending row and column."""

    def __init__(self, report: object, message: str) -> None:
        self.report = report
        super().__init__(message)


class PruneError(ModelToolsError):
    """A model could not be pruned as asked (unknown layout, nothing left to keep)."""


class QuantizationError(ModelToolsError):
    """onnxruntime could not quantize a model; the message names the method that was tried."""


class CalibrationError(QuantizationError):
    """Calibration data does not fit the model: wrong shape, dtype, or too few samples."""


class TFLiteError(ModelToolsError):
    """A model could not be rebuilt in Keras or converted to TFLite."""


class TFLiteUnavailableError(TFLiteError):
    """TensorFlow (the optional ``tflite`` extra) is not installed, so no .tflite can be made."""


class TFLiteParityError(ParityError, TFLiteError):
    """The .tflite file's outputs differ from torch's beyond tolerance."""


class EvaluationError(ModelToolsError):
    """A variant could not be loaded or run for evaluation."""


class GatePolicyError(ConfigError):
    """A gate policy does not parse or holds a value of the wrong kind; the message names the key."""


class ProfileError(ModelToolsError):
    """A data profile could not be built or does not parse."""


class BundleError(ModelToolsError):
    """A bundle's manifest is malformed, or its files do not match it."""


class PipelineError(ModelToolsError):
    """The optimization pipeline cannot produce a bundle (the fp32 baseline itself fails a gate)."""
