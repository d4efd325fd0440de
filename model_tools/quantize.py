"""int8 quantization of an ONNX model with onnxruntime (hub only: imports onnx).

The method is chosen from the graph, and the choice is recorded:

- no convolutions: **dynamic** quantization. Weights are int8 in the file and
  activations are quantized per batch at run time; no calibration data needed.
- convolutions: **static QDQ**, per-channel int8 weights and activation ranges
  calibrated on training data. Dynamic quantization of a convolution becomes a
  ConvInteger node, which onnxruntime runs 4-6x slower than the float one; QDQ
  lets onnxruntime fuse QLinearConv kernels that are faster than fp32.

Static QDQ gains need convolutions wide enough to dominate the run time (32 or
more channels); on tiny models the quantize/dequantize steps cost more than the
int8 arithmetic saves, which is what the gates then catch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from model_tools.errors import CalibrationError, ConfigError, InvalidModelError, QuantizationError
from model_tools.hashing import sha256_file
from model_tools.onnx_info import describe_onnx

__all__ = [
    "CONV_OPS",
    "MIN_CALIBRATION_SAMPLES",
    "QuantizationChoice",
    "QuantizeResult",
    "choose_method",
    "quantize_onnx",
]

Method = Literal["dynamic", "static-qdq"]
CONV_OPS = frozenset({"Conv", "ConvTranspose"})
# Fewer samples than this give activation ranges that say more about the samples than the data.
MIN_CALIBRATION_SAMPLES = 32
_CALIBRATION_BATCH = 32


@dataclass(frozen=True)
class QuantizationChoice:
    """How a model was quantized and why: this goes into the bundle manifest."""

    method: Method
    reason: str
    per_channel: bool
    weight_type: str = "int8"
    activation_type: str = "int8"
    calibration_samples: int = 0
    calibration_method: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "reason": self.reason,
            "per_channel": self.per_channel,
            "weight_type": self.weight_type,
            "activation_type": self.activation_type,
            "calibration_samples": self.calibration_samples,
            "calibration_method": self.calibration_method,
        }


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    sha256: str
    length: int
    choice: QuantizationChoice
    variant: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "variant", f"int8-{'qdq' if self.choice.method == 'static-qdq' else 'dynamic'}"
        )


def choose_method(path: str | os.PathLike[str]) -> tuple[Method, str]:
    """The method for the model at ``path`` and the reason, from the operators in its graph."""
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:  # onnx raises DecodeError, OSError and others
        raise InvalidModelError(f"cannot read ONNX model {path}: {e}") from e
    ops = {node.op_type for node in graph.node}
    convs = sorted(ops & CONV_OPS)
    if convs:
        return "static-qdq", (
            f"graph has {', '.join(convs)}: dynamic int8 would run them as ConvInteger (slower than fp32), "
            "so static QDQ with calibrated activations and per-channel weights"
        )
    return "dynamic", "graph has no convolutions: dynamic int8 (MatMulInteger) needs no calibration"


def quantize_onnx(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    calibration: np.ndarray | None = None,
    method: Literal["auto", "dynamic", "static-qdq"] = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> QuantizeResult:
    """Quantize the fp32 model at ``source`` to int8 at ``destination``.

    ``calibration`` (float32, shaped like the model's input with the batch first)
    is required for static QDQ; the training split is the right source. Raises
    CalibrationError when it does not fit and QuantizationError when
    onnxruntime fails; a file appears at ``destination`` only on success.
    ``progress(done, total)`` is called once per calibration batch.
    """
    src = Path(source)
    dst = Path(destination)
    if method == "auto":
        chosen, reason = choose_method(src)
    elif method in ("dynamic", "static-qdq"):
        chosen, reason = method, "asked for explicitly"
    else:
        raise ConfigError(f"method must be 'auto', 'dynamic' or 'static-qdq', got {method!r}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        if chosen == "dynamic":
            choice = QuantizationChoice(
                method="dynamic", reason=reason, per_channel=False, activation_type="uint8"
            )
            _run(
                "dynamic",
                lambda: quantize_dynamic(src, staging, weight_type=QuantType.QInt8, per_channel=False),
            )
        else:
            input_name, batches = _calibration_batches(src, calibration)
            reader = _Reader(input_name, batches, progress)
            choice = QuantizationChoice(
                method="static-qdq",
                reason=reason,
                per_channel=True,
                calibration_samples=sum(len(b) for b in batches),
                calibration_method="minmax",
            )
            _run(
                "static QDQ",
                lambda: quantize_static(
                    src,
                    staging,
                    reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                ),
            )
        try:
            describe_onnx(staging)
        except InvalidModelError as e:
            raise QuantizationError(f"the {choice.method} int8 model does not load: {e}") from e
        staging.replace(dst)
    finally:
        staging.unlink(missing_ok=True)
    return QuantizeResult(path=dst, sha256=sha256_file(dst), length=dst.stat().st_size, choice=choice)


def _calibration_batches(model: Path, data: np.ndarray | None) -> tuple[str, list[np.ndarray]]:
    schema = describe_onnx(model)
    if len(schema.inputs) != 1:
        raise CalibrationError(f"expected a model with one input to calibrate, got {len(schema.inputs)}")
    spec = schema.inputs[0]
    if data is None:
        raise CalibrationError(
            "static QDQ needs calibration data: expected float32 of shape "
            f"{_shape_text(spec.shape)}, got none"
        )
    if not isinstance(data, np.ndarray) or data.dtype != np.float32:
        got = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise CalibrationError(f"expected float32 calibration data for input {spec.name!r}, got {got}")
    fixed = [(i, d) for i, d in enumerate(spec.shape) if d != -1 and i > 0]
    if data.ndim != len(spec.shape) or any(data.shape[i] != d for i, d in fixed):
        raise CalibrationError(
            f"calibration data has shape {data.shape}: expected {_shape_text(spec.shape)} "
            f"to match model input {spec.name!r}"
        )
    if data.shape[0] < MIN_CALIBRATION_SAMPLES:
        raise CalibrationError(
            f"expected at least {MIN_CALIBRATION_SAMPLES} calibration samples, got {data.shape[0]}"
        )
    if not np.isfinite(data).all():
        raise CalibrationError("calibration data holds NaN or infinite values: expected finite numbers")
    step = _CALIBRATION_BATCH
    return spec.name, [np.ascontiguousarray(data[i : i + step]) for i in range(0, len(data), step)]


class _Reader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds calibration batches to onnxruntime, reporting progress per batch."""

    def __init__(
        self, input_name: str, batches: list[np.ndarray], progress: Callable[[int, int], None] | None
    ) -> None:
        self._input_name = input_name
        self._batches = batches
        self._progress = progress
        self._iter: Iterator[np.ndarray] = iter(batches)
        self._done = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        if batch is None:
            return None
        self._done += 1
        if self._progress is not None:
            self._progress(self._done, len(self._batches))
        return {self._input_name: batch}

    def rewind(self) -> None:
        self._iter = iter(self._batches)
        self._done = 0


def _run(what: str, call: Callable[[], object]) -> None:
    try:
        with _quiet_preprocess_advice():
            call()
    except (CalibrationError, QuantizationError):
        raise
    except Exception as e:  # onnxruntime.quantization raises many unrelated types
        raise QuantizationError(f"onnxruntime {what} quantization failed: {type(e).__name__}: {e}") from e


@contextlib.contextmanager
def _quiet_preprocess_advice() -> Iterator[None]:
    """onnxruntime logs advice to pre-process on every call; measured here, it changes nothing."""

    def drop(record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage() and "pre-process" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join("N" if i == 0 else ("?" if d == -1 else str(d)) for i, d in enumerate(shape)) + ")"
